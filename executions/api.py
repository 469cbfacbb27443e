"""Native `/api/v1` routers (thin: parse, call a service or selector, shape the reply)."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Field, Router, Schema

from executions import selectors, serializers, services
from executions.live import follow
from executions.errors import BadRequest, Forbidden
from executions.models import Role, role_at_least

agents_router = Router(tags=["agents"])
executions_router = Router(tags=["executions"])
misc_router = Router(tags=["workspace"])


def require(request: HttpRequest, role: str) -> None:
    """Refuse a key whose role is below `role` (viewers read; reviewers run and decide)."""
    if not role_at_least(request.role, role):
        raise Forbidden(f"this API key's role ({request.role}) cannot do this; it needs {role}")


def data(value: Any, status: int = 200) -> JsonResponse:
    return JsonResponse({"data": value}, status=status)


def optional_body(request: HttpRequest) -> dict[str, Any]:
    """A body that may be absent or `{}` (cancel, approve, deny); malformed JSON is still a 400."""
    if not request.body or not request.body.strip():
        return {}
    value = json.loads(request.body)
    if not isinstance(value, dict):
        raise BadRequest("request body must be a JSON object", details={"field": "body"})
    return value


def page_out(page: selectors.Page, shape) -> JsonResponse:
    return JsonResponse({"data": [shape(item) for item in page.items], "meta": page.meta()})


# --- agents ----------------------------------------------------------------------------------


class AgentIn(Schema):
    name: str
    type: str = "agent"
    description: str = ""
    metadata: dict[str, Any] | None = None
    template_id: str | None = None


class VersionIn(Schema):
    version: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    set_current: bool = False
    message: str | None = None
    model_config_: dict[str, Any] | None = Field(None, alias="model_config")
    run_budget: dict[str, Any] | None = None
    approval_policy: dict[str, Any] | None = None
    tools: list[Any] | None = None
    sub_agents: list[Any] | None = None
    guardrails: list[Any] | None = None


class ExecuteIn(Schema):
    input: Any = None
    metadata: dict[str, Any] | None = None
    session_id: str | None = None
    version_id: str | None = None
    sync: bool | None = None


class ExecutionIn(ExecuteIn):
    agent_id: str = Field(..., description="id (or name) of the agent to run")


class ResumeIn(Schema):
    input: Any = None


@agents_router.get("", summary="List agents")
def agent_list(request: HttpRequest, name: str | None = None, type: str | None = None):
    page, limit = selectors.page_params(request.GET)
    agents = selectors.agent_list(workspace=request.workspace, name=name, type=type)
    return page_out(selectors.paginate(agents, page=page, limit=limit), serializers.agent_out)


@agents_router.post("", summary="Create an agent")
def agent_create(request: HttpRequest, body: AgentIn):
    require(request, Role.ADMIN)
    agent = services.agent_create(
        workspace=request.workspace,
        name=body.name,
        type=body.type,
        description=body.description,
        metadata=body.metadata,
    )
    return data(serializers.agent_out(agent), status=201)


@agents_router.get("/{agent_id}", summary="Get an agent")
def agent_get(request: HttpRequest, agent_id: str):
    return data(
        serializers.agent_out(selectors.agent_get(workspace=request.workspace, agent_id=agent_id))
    )


@agents_router.patch("/{agent_id}", summary="Update an agent")
def agent_update(request: HttpRequest, agent_id: str):
    require(request, Role.ADMIN)
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    changes = optional_body(request)
    return data(serializers.agent_out(services.agent_update(agent=agent, data=changes)))


@agents_router.delete(
    "/{agent_id}", summary="Delete an agent (refused while it has unfinished runs)"
)
def agent_delete(request: HttpRequest, agent_id: str):
    require(request, Role.ADMIN)
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    services.agent_delete(agent=agent)
    return HttpResponse(status=204)


@agents_router.get("/{agent_id}/versions", summary="List an agent's versions")
def version_list(request: HttpRequest, agent_id: str):
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    versions = agent.versions.select_related("agent").order_by("-number")
    return data([serializers.version_out(v) for v in versions])


@agents_router.post("/{agent_id}/versions", summary="Create a version (validated definition)")
def version_create(request: HttpRequest, agent_id: str, body: VersionIn):
    require(request, Role.ADMIN)
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    version = services.agent_version_create(
        agent=agent,
        version=body.version,
        config=body.config,
        input_schema=body.input_schema,
        output_schema=body.output_schema,
        message=body.message or "",
        set_current=body.set_current,
        extras={
            "model_config": body.model_config_,
            "run_budget": body.run_budget,
            "approval_policy": body.approval_policy,
            "tools": body.tools,
        },
    )
    return data(serializers.version_out(version), status=201)


@agents_router.get("/{agent_id}/versions/{version_id}", summary="Get a version")
def version_get(request: HttpRequest, agent_id: str, version_id: str):
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    return data(
        serializers.version_out(selectors.agent_version_get(agent=agent, version_id=version_id))
    )


@agents_router.api_operation(
    ["PUT", "POST"], "/{agent_id}/versions/{version_id}/promote", summary="Make a version current"
)
def version_promote(request: HttpRequest, agent_id: str, version_id: str):
    require(request, Role.ADMIN)
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    version = selectors.agent_version_get(agent=agent, version_id=version_id)
    return data(serializers.agent_out(services.agent_version_promote(agent=agent, version=version)))


@agents_router.post("/{agent_id}/execute", summary="Execute an agent (sync: true waits)")
async def agent_execute(request: HttpRequest, agent_id: str, body: ExecuteIn):
    from asgiref.sync import sync_to_async

    execution, created = await sync_to_async(_start)(request, agent_id, body)
    if body.sync:
        execution = await follow.wait_settled(
            execution.pk, timeout=settings.SYNC_EXECUTE_TIMEOUT_SECONDS
        )
    payload = await sync_to_async(serializers.execution_out)(execution)
    return data(payload, status=201 if created else 200)


def _start(request: HttpRequest, agent_ref: str, body: ExecuteIn):
    require(request, Role.REVIEWER)
    agent = selectors.agent_get_by_id_or_name(workspace=request.workspace, ref=agent_ref)
    version = (
        selectors.agent_version_get(agent=agent, version_id=body.version_id)
        if body.version_id
        else None
    )
    return services.execution_start(
        workspace=request.workspace,
        agent=agent,
        input=body.input,
        metadata=body.metadata,
        session_id=body.session_id,
        version=version,
        idempotency_key=request.headers.get("Idempotency-Key") or None,
        actor=request.actor,
    )


# --- executions ------------------------------------------------------------------------------


@executions_router.post("", summary="Start an execution")
async def execution_create(request: HttpRequest, body: ExecutionIn):
    return await agent_execute(request, body.agent_id, body)


@executions_router.get("", summary="List executions with filters")
def execution_list(
    request: HttpRequest,
    status: str | None = None,
    agent_id: str | None = None,
    session_id: str | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
    q: str | None = None,
    order_by: str | None = None,
    order_direction: str | None = None,
    cursor: str | None = None,
):
    filters = selectors.ExecutionFilters.from_params(request.GET)
    page, limit = selectors.page_params(request.GET)
    executions = selectors.execution_list(workspace=request.workspace, filters=filters)
    ordering = request.GET.get("ordering") or order_by
    if cursor is not None or request.GET.get("mode") == "cursor":
        result = selectors.keyset_page(
            executions,
            cursor=cursor or None,
            limit=limit,
            descending=(order_direction or "desc").lower() != "asc",
        )
    else:
        ordered = selectors.order_executions(executions, ordering, order_direction)
        result = selectors.paginate(ordered, page=page, limit=limit)
    return page_out(result, serializers.execution_out)


@executions_router.get(
    "/approval-inbox", summary="Executions waiting on an approval (PromptRails approval inbox)"
)
def execution_approval_inbox(request: HttpRequest, assigned: str | None = None):
    # Registered before "/{execution_id}": the literal path must win over the pattern.
    from approvals import policies
    from approvals import selectors as approval_selectors

    page, limit = selectors.page_params(request.GET)
    me = policies.decider_for(request.actor, workspace=request.workspace, role=request.role)
    executions = approval_selectors.approval_inbox(
        workspace=request.workspace, decider=me, mine=(assigned or "").lower() == "me"
    )
    return page_out(selectors.paginate(executions, page=page, limit=limit), _inbox_item)


def _inbox_item(execution) -> dict[str, Any]:
    from approvals.serializers import approval_out

    pending = getattr(execution, "pending_approvals", [])
    due = [a.expires_at for a in pending if a.expires_at]
    return {
        **serializers.execution_out(execution),
        "approval_expires_at": serializers.iso(min(due)) if due else None,
        "pending_approvals": [approval_out(a, detail=False) for a in pending],
    }


@executions_router.get("/{execution_id}", summary="Get an execution")
def execution_get(request: HttpRequest, execution_id: str):
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    return data(serializers.execution_out(execution))


@executions_router.get("/{execution_id}/tree", summary="An execution with its child executions")
def execution_tree(request: HttpRequest, execution_id: str):
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    return data(serializers.tree_out(selectors.execution_tree(execution=execution)))


@executions_router.get("/{execution_id}/transitions", summary="The execution's history, in order")
def execution_transitions(request: HttpRequest, execution_id: str):
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    page, limit = selectors.page_params(request.GET)
    steps = selectors.paginate(
        selectors.transition_list(execution=execution), page=page, limit=limit
    )
    return page_out(steps, serializers.transition_out)


@executions_router.post("/{execution_id}/cancel", summary="Cancel an execution")
def execution_cancel(request: HttpRequest, execution_id: str):
    require(request, Role.REVIEWER)
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    reason = optional_body(request).get("reason") or ""
    services.execution_cancel(execution=execution, actor=request.actor, reason=str(reason))
    return data(serializers.execution_out(execution))


@executions_router.post("/{execution_id}/resume", summary="Answer a wait_for_input step")
def execution_resume(request: HttpRequest, execution_id: str, body: ResumeIn):
    require(request, Role.REVIEWER)
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    services.execution_resume(execution=execution, input=body.input, actor=request.actor)
    return data(serializers.execution_out(execution))


@executions_router.post(
    "/{execution_id}/retry", summary="Run again with the same input and version"
)
def execution_retry(request: HttpRequest, execution_id: str):
    require(request, Role.REVIEWER)
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    retried = services.execution_retry(execution=execution, actor=request.actor)
    return data(serializers.execution_out(retried), status=201)


@executions_router.get("/{execution_id}/wait", summary="Wait until finished or parked")
async def execution_wait(request: HttpRequest, execution_id: str, timeout: float = 30.0):
    from asgiref.sync import sync_to_async

    execution = await sync_to_async(selectors.execution_get)(
        workspace=request.workspace, execution_id=execution_id
    )
    timeout = max(0.0, min(timeout, settings.SYNC_EXECUTE_TIMEOUT_SECONDS * 4))
    execution = await follow.wait_settled(execution.pk, timeout=timeout)
    return data(await sync_to_async(serializers.execution_out)(execution))


def _decide_execution(request: HttpRequest, execution_id: str, decision: str) -> JsonResponse:
    from approvals import services as approval_services

    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    body = optional_body(request)  # the SDK sends {} or {"reason": "..."}
    reason = body.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise BadRequest("reason must be a string", details={"field": "reason"})
    approval = approval_services.pending_approval_for(execution)
    approval_services.approval_decide(
        approval=approval,
        actor=request.actor,
        role=request.role,
        decision=decision,
        reason=reason or "",
        payload=body.get("payload"),
        response=body.get("response"),
        option=body.get("option"),
        options=body.get("options"),
        idempotency_key=request.headers.get("Idempotency-Key") or None,
    )
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    return data(serializers.execution_out(execution))


@executions_router.post(
    "/{execution_id}/approve", summary="Approve the approval the execution waits on"
)
def execution_approve(request: HttpRequest, execution_id: str):
    return _decide_execution(request, execution_id, "approve")


@executions_router.post(
    "/{execution_id}/deny", summary="Reject the approval the execution waits on"
)
def execution_deny(request: HttpRequest, execution_id: str):
    return _decide_execution(request, execution_id, "reject")


@executions_router.post(
    "/{execution_id}/events",
    summary="External agents: report steps, logs, usage, output or error",
)
def execution_events(request: HttpRequest, execution_id: str):
    from executions import external

    require(request, Role.REVIEWER)
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    body = optional_body(request)
    events = body.get("events", [body])
    external.external_events_record(execution=execution, events=events, actor=request.actor)
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    return data(serializers.execution_out(execution))


@executions_router.post(
    "/{execution_id}/approvals",
    summary="External agents: ask for a decision (parks the execution)",
)
def execution_request_approval(request: HttpRequest, execution_id: str):
    from approvals import services as approval_services
    from approvals.serializers import approval_out

    require(request, Role.REVIEWER)
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    body = optional_body(request)
    payload = body.pop("payload", None)
    approval = approval_services.approval_request(
        execution=execution, spec=body, payload=payload, actor=request.actor
    )
    return data(approval_out(approval), status=201)


# --- workspace -------------------------------------------------------------------------------


@misc_router.get("/me", tags=["workspace"], summary="The key's workspace and role")
def me(request: HttpRequest):
    return data(
        {
            "workspace": {
                "id": str(request.workspace.pk),
                "slug": request.workspace.slug,
                "name": request.workspace.name,
            },
            "role": request.role,
            "api_key": {"prefix": request.api_key.prefix, "name": request.api_key.name},
        }
    )


@misc_router.get("/stats", tags=["workspace"], summary="Counts per status and total cost")
def stats(request: HttpRequest, created_after: str | None = None):
    filters = selectors.ExecutionFilters.from_params(request.GET)
    result = selectors.execution_stats(workspace=request.workspace, since=filters.created_after)
    result["cost"] = float(result["cost"])
    return data(result)


# --- live streams (SSE) ------------------------------------------------------------------------


@executions_router.get("/{execution_id}/stream", summary="Streamed events (SSE), replay then live")
async def execution_stream(request: HttpRequest, execution_id: str):
    from asgiref.sync import sync_to_async

    from executions.live import streams

    execution = await sync_to_async(selectors.execution_get, thread_sensitive=False)(
        workspace=request.workspace, execution_id=execution_id
    )
    return streams.sse_response(streams.execution_events(execution.pk))


@executions_router.get(
    "/{execution_id}/status.stream", summary="Status changes (SSE, Julep ExecutionStatusEvent)"
)
async def execution_status_stream(request: HttpRequest, execution_id: str):
    from asgiref.sync import sync_to_async

    from executions.live import streams

    execution = await sync_to_async(selectors.execution_get, thread_sensitive=False)(
        workspace=request.workspace, execution_id=execution_id
    )
    return streams.sse_response(streams.status_events(execution.pk))
