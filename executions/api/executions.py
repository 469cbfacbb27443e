"""`/api/v1/executions`: start, list, read, and act on executions."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from django.http import HttpRequest
from ninja import Field, Query, Router

from approvals import policies
from approvals import selectors as approval_selectors
from approvals import services as approval_services
from approvals.serializers import approval_out
from executions import selectors, serializers, services
from executions.api import schemas as s
from executions.api.agents import EXECUTE_REPLIES, execute
from executions.api.common import (
    REVIEWER,
    WRITE_ERRORS,
    body_doc,
    checked_body,
    data,
    optional_body,
    optional_input,
    page_out,
    replies,
    require,
)
from executions.api.params import PageParams
from executions.validation import SafeStr, clean_decimal, clean_params, clean_text

router = Router(tags=["executions"])

Text = SafeStr(200)
Finite = Annotated[float, Field(allow_inf_nan=False)]


@router.post("", summary="Start an execution", response=EXECUTE_REPLIES)
def execution_create(request: HttpRequest, body: s.ExecutionIn):
    return execute(request, body.agent_id, body)


@router.get(
    "",
    summary="List executions with filters (page or cursor mode)",
    response=replies({200: s.ExecutionPage}),
    description=(
        "Filters combine with AND. `metadata=key=value` (repeatable) or `metadata.<key>=value` "
        "match metadata entries. `cursor` (or `mode=cursor`) walks deep pages without counting."
    ),
)
def execution_list(
    request: HttpRequest,
    paging: Query[PageParams],
    status: list[Text] | None = Query(
        None, description="one or more statuses (repeat or comma-separate)"
    ),
    agent_id: uuid.UUID | None = None,
    session_id: Text | None = None,
    parent_id: uuid.UUID | None = None,
    created_after: Text | None = None,
    created_before: Text | None = None,
    q: Text | None = None,
    search: Text | None = None,
    metadata: list[SafeStr(1000)] | None = Query(None, description="key=value, repeatable"),
    cost_above: Finite | None = None,
    ordering: Text | None = None,
    order_by: Text | None = None,
    order_direction: Text | None = None,
    cursor: Text | None = None,
    mode: Text | None = None,
):
    # The declared parameters are checked by ninja; this also covers the free-form
    # `metadata.<key>` ones (no NUL anywhere, which PostgreSQL cannot compare).
    clean_params(request.GET)
    clean_decimal(request.GET.get("cost_above"), field="cost_above")
    filters = selectors.ExecutionFilters.from_params(request.GET)
    executions = selectors.execution_list(workspace=request.workspace, filters=filters)
    if cursor is not None or mode == "cursor":
        result = selectors.keyset_page(
            executions,
            cursor=cursor or None,
            limit=paging.size,
            descending=(order_direction or "desc").lower() != "asc",
        )
    else:
        ordered = selectors.order_executions(executions, ordering or order_by, order_direction)
        exact = request.GET.get("count") == "exact"
        result = selectors.paginate(ordered, page=paging.page, limit=paging.size, exact=exact)
    return page_out(result, serializers.execution_out)


@router.get(
    "/approval-inbox",
    summary="Executions waiting on an approval (PromptRails approval inbox)",
    response=replies({200: s.InboxPage}),
)
def execution_approval_inbox(
    request: HttpRequest, paging: Query[PageParams], assigned: Text | None = None
):
    # Registered before "/{execution_id}": the literal path must win over the pattern.
    me = policies.decider_for(request.actor, workspace=request.workspace, role=request.role)
    executions = approval_selectors.approval_inbox(
        workspace=request.workspace, decider=me, mine=(assigned or "").lower() == "me"
    )
    page = selectors.paginate(executions, page=paging.page, limit=paging.size)
    return page_out(page, _inbox_item)


def _inbox_item(execution) -> dict[str, Any]:
    pending = getattr(execution, "pending_approvals", [])
    due = [a.expires_at for a in pending if a.expires_at]
    return {
        **serializers.execution_out(execution),
        "approval_expires_at": serializers.iso(min(due)) if due else None,
        "pending_approvals": [approval_out(a, detail=False) for a in pending],
    }


@router.get(
    "/{execution_id}", summary="Get an execution", response=replies({200: s.ExecutionReply}, 404)
)
def execution_get(request: HttpRequest, execution_id: Text):
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    return data(serializers.execution_out(execution))


@router.get(
    "/{execution_id}/tree",
    summary="An execution with its child executions",
    response=replies({200: s.ExecutionTreeReply}, 404),
)
def execution_tree(request: HttpRequest, execution_id: Text):
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    return data(serializers.tree_out(selectors.execution_tree(execution=execution)))


@router.get(
    "/{execution_id}/transitions",
    summary="The execution's history, in order",
    response=replies({200: s.TransitionPage}, 404),
)
def execution_transitions(request: HttpRequest, execution_id: Text, paging: Query[PageParams]):
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    steps = selectors.transition_list(execution=execution)
    page = selectors.paginate(steps, page=paging.page, limit=paging.size)
    return page_out(page, serializers.transition_out)


@router.post(
    "/{execution_id}/cancel",
    summary="Cancel an execution",
    response=replies({200: s.ExecutionReply}, 404, *WRITE_ERRORS),
    openapi_extra=body_doc(s.CancelIn),
)
def execution_cancel(request: HttpRequest, execution_id: Text):
    require(request, REVIEWER)
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    body = optional_input(request, s.CancelIn)
    services.execution_cancel(execution=execution, actor=request.actor, reason=body.reason or "")
    return data(serializers.execution_out(execution))


@router.post(
    "/{execution_id}/resume",
    summary="Answer a wait_for_input step",
    response=replies({200: s.ExecutionReply}, 404, *WRITE_ERRORS),
)
def execution_resume(request: HttpRequest, execution_id: Text, body: s.ResumeIn):
    require(request, REVIEWER)
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    services.execution_resume(execution=execution, input=body.input, actor=request.actor)
    return data(serializers.execution_out(execution))


@router.post(
    "/{execution_id}/retry",
    summary="Run again with the same input and version",
    response=replies({201: s.ExecutionReply}, 404, *WRITE_ERRORS),
)
def execution_retry(request: HttpRequest, execution_id: Text):
    require(request, REVIEWER)
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    retried = services.execution_retry(execution=execution, actor=request.actor)
    return data(serializers.execution_out(retried), status=201)


def _decide_execution(request: HttpRequest, execution_id: str, decision: str):
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    body = optional_input(request, s.DecisionShortcutIn)  # the SDK sends {} or {"reason": …}
    key = request.headers.get("Idempotency-Key") or None
    clean_text(key, field="Idempotency-Key", max_length=200)
    approval = approval_services.pending_approval_for(execution)
    approval_services.approval_decide(
        approval=approval,
        actor=request.actor,
        role=request.role,
        decision=decision,
        reason=body.reason or "",
        payload=body.payload,
        response=body.response,
        option=body.option,
        options=body.options,
        idempotency_key=key,
    )
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    return data(serializers.execution_out(execution))


DECIDE = {
    "response": replies({200: s.ExecutionReply}, 404, *WRITE_ERRORS),
    "openapi_extra": body_doc(s.DecisionShortcutIn),
}


@router.post(
    "/{execution_id}/approve", summary="Approve the approval the execution waits on", **DECIDE
)
def execution_approve(request: HttpRequest, execution_id: Text):
    return _decide_execution(request, execution_id, "approve")


@router.post("/{execution_id}/deny", summary="Reject the approval the execution waits on", **DECIDE)
def execution_deny(request: HttpRequest, execution_id: Text):
    return _decide_execution(request, execution_id, "reject")


@router.post(
    "/{execution_id}/events",
    summary="External agents: report steps, logs, usage, output or error",
    response=replies({200: s.ExecutionReply}, 404, *WRITE_ERRORS),
    openapi_extra=body_doc(s.ExternalEventsIn),
)
def execution_events(request: HttpRequest, execution_id: Text):
    require(request, REVIEWER)
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    body = optional_body(request)
    events = body.get("events", [body])
    services.external_events_record(execution=execution, events=events, actor=request.actor)
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    return data(serializers.execution_out(execution))


@router.post(
    "/{execution_id}/approvals",
    summary="External agents: ask for a decision (parks the execution)",
    response=replies({201: s.ApprovalReply}, 404, *WRITE_ERRORS),
    openapi_extra=body_doc(s.ApprovalRequestIn),
)
def execution_request_approval(request: HttpRequest, execution_id: Text):
    require(request, REVIEWER)
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    body = checked_body(request, s.ApprovalRequestIn)
    payload = body.pop("payload", None)
    approval = approval_services.approval_request(
        execution=execution, spec=body, payload=payload, actor=request.actor
    )
    return data(approval_out(approval), status=201)
