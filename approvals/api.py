"""Native `/api/v1/approvals` and `/api/v1/webhooks` routers (thin: parse, call a service or
selector, shape the reply)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Annotated, Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import Field, Query, Router

from approvals import notifications, policies, services
from approvals import schemas as s
from approvals import selectors as approval_selectors
from approvals.models import ApprovalStatus
from approvals.serializers import approval_out, comment_out, delivery_out, webhook_out
from executions import selectors
from executions.api.common import (
    WRITE_ERRORS,
    body_doc,
    checked_body,
    json_reply,
    replies,
    require,
)
from executions.api.params import PageParams
from executions.errors import ValidationFailed, field_error
from executions.live import follow
from executions.models import Role
from executions.validation import SafeStr, clean_params, clean_text

router = Router(tags=["approvals"])
Text = SafeStr(200)
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
webhooks_router = Router(tags=["webhooks"])


def decider(request: HttpRequest) -> policies.Decider:
    return policies.decider_for(request.actor, workspace=request.workspace, role=request.role)


def shaped(request: HttpRequest, approval) -> dict[str, Any]:
    return approval_out(approval, can_decide=policies.can_decide(approval, decider(request)))


@router.get(
    "", summary="List approvals (soonest due first)", response=replies({200: s.ApprovalPage})
)
def approval_list(
    request: HttpRequest,
    paging: Query[PageParams],
    status: Text | None = None,
    assigned: Text | None = None,
    agent_id: uuid.UUID | None = None,
    execution_id: uuid.UUID | None = None,
    created_after: Text | None = None,
    created_before: Text | None = None,
    overdue: bool | None = None,
):
    clean_params(request.GET)
    filters = approval_selectors.ApprovalFilters.from_params(request.GET)
    me = decider(request)
    approvals = approval_selectors.approval_list(
        workspace=request.workspace, filters=filters, decider=me
    )
    result = selectors.paginate(approvals, page=paging.page, limit=paging.size)
    return json_reply(
        {
            "data": [
                approval_out(a, can_decide=policies.can_decide(a, me), detail=False)
                for a in result.items
            ],
            "meta": result.meta(),
        }
    )


@router.post(
    "/bulk-decide",
    summary="Decide many approvals at once (per-item results)",
    response=replies({200: s.BulkReply}, *WRITE_ERRORS),
)
def approval_bulk_decide(request: HttpRequest, body: s.BulkDecideIn):
    if body.ids is None and body.filter is None:
        raise ValidationFailed(
            "send ids or a filter", details=[field_error("ids", "ids or filter is required")]
        )
    if body.ids is not None:
        approvals, missing = approval_selectors.approvals_by_ids(
            workspace=request.workspace, ids=body.ids
        )
    else:
        filters = approval_selectors.ApprovalFilters.from_params(
            {**{k: str(v) for k, v in (body.filter or {}).items()}, "status": "pending"}
        )
        approvals = list(
            approval_selectors.approval_list(
                workspace=request.workspace, filters=filters, decider=decider(request)
            )[: services.BULK_LIMIT]
        )
        missing = []
    results = services.approval_bulk_decide(
        approvals=approvals,
        missing=missing,
        actor=request.actor,
        decision=body.decision,
        reason=body.reason or "",
        role=request.role,
    )
    counts: dict[str, int] = {}
    for item in results:
        counts[item["result"]] = counts.get(item["result"], 0) + 1
    return json_reply({"data": results, "meta": {"total": len(results), "counts": counts}})


@router.get(
    "/{approval_id}",
    summary="Get an approval (with its decisions)",
    response=replies({200: s.ApprovalReply}, 404),
)
def approval_get(request: HttpRequest, approval_id: Text):
    approval = approval_selectors.approval_get(workspace=request.workspace, approval_id=approval_id)
    return json_reply({"data": shaped(request, approval)})


@router.post(
    "/{approval_id}/decide",
    summary="Approve, reject, edit or respond",
    response=replies({200: s.ApprovalReply}, 404, *WRITE_ERRORS),
)
def approval_decide(request: HttpRequest, approval_id: Text, body: s.DecideIn):
    approval = approval_selectors.approval_get(
        workspace=request.workspace, approval_id=approval_id, votes=False
    )
    decided = services.approval_decide(
        approval=approval,
        actor=request.actor,
        role=request.role,
        decision=body.decision,
        reason=body.reason or "",
        payload=body.payload,
        response=body.response,
        option=body.option,
        options=body.options,
        idempotency_key=clean_text(
            request.headers.get("Idempotency-Key") or None, field="Idempotency-Key", max_length=200
        ),
    )
    if decided.replayed:
        # A replay answers with the approval as it is now, votes and assignees included.
        approval = approval_selectors.approval_get(
            workspace=request.workspace, approval_id=approval_id
        )
    else:
        # As this decision left it: fields, votes and assignees (no re-read of the row).
        approval = decided.approval
    reply = json_reply({"data": shaped(request, approval)})
    if decided.replayed:
        reply["Idempotent-Replayed"] = "true"
    return reply


@router.get(
    "/{approval_id}/comments",
    summary="Comments on an approval, oldest first",
    response=replies({200: s.CommentPage}, 404),
)
def comment_list(request: HttpRequest, approval_id: Text, paging: Query[PageParams]):
    approval = approval_selectors.approval_get(workspace=request.workspace, approval_id=approval_id)
    comments = approval_selectors.comment_list(approval=approval).select_related("actor_user")
    result = selectors.paginate(comments, page=paging.page, limit=paging.size)
    return json_reply({"data": [comment_out(c) for c in result.items], "meta": result.meta()})


@router.post(
    "/{approval_id}/comments",
    summary="Comment on an approval",
    response=replies({201: s.CommentReply}, 404, *WRITE_ERRORS),
)
def comment_add(request: HttpRequest, approval_id: Text, body: s.CommentIn):
    require(request, Role.REVIEWER)
    approval = approval_selectors.approval_get(workspace=request.workspace, approval_id=approval_id)
    comment = services.approval_comment_add(approval=approval, actor=request.actor, body=body.body)
    return json_reply({"data": comment_out(comment)}, status=201)


@router.get(
    "/{approval_id}/wait",
    summary="Long poll: return once decided (or at timeout)",
    response=replies({200: s.ApprovalWaitReply}, 404),
)
async def approval_wait(request: HttpRequest, approval_id: Text, timeout: Seconds = 30.0):
    """Polls one indexed column with asyncio.sleep between reads, so a thousand waiting
    programs hold no thread; the reply is the approval as it is when decided or at timeout
    (`status` still `pending` then: call again)."""
    # Each read gives its connection back: a thousand waiting programs hold no pooled one.
    approval = await sync_to_async(follow.read_then_release)(
        approval_selectors.approval_get, workspace=request.workspace, approval_id=approval_id
    )
    # Capped by the deployment (APPROVAL_WAIT_MAX_SECONDS): below a proxy's idle timeout.
    timeout = max(0.0, min(float(timeout), settings.APPROVAL_WAIT_MAX_SECONDS))
    deadline = time.monotonic() + timeout
    delay = 0.05
    status = approval.status
    while status == ApprovalStatus.PENDING and time.monotonic() < deadline:
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.5)
        status = await sync_to_async(follow.read_then_release)(
            approval_selectors.approval_status, approval_id=approval.pk
        )
    approval = await sync_to_async(approval_selectors.approval_get)(
        workspace=request.workspace, approval_id=approval.pk
    )
    body = await sync_to_async(shaped)(request, approval)
    return json_reply({"data": body, "meta": {"decided": status != ApprovalStatus.PENDING}})


# --- webhooks --------------------------------------------------------------------------------


@webhooks_router.get(
    "", summary="List the workspace's webhooks", response=replies({200: s.WebhookList}, 403)
)
def webhook_list(request: HttpRequest):
    require(request, Role.ADMIN)
    hooks = approval_selectors.webhook_list(workspace=request.workspace)
    return json_reply(
        {"data": [webhook_out(h) for h in hooks], "meta": {"events": notifications.EVENTS}}
    )


@webhooks_router.post(
    "",
    summary="Subscribe a URL to events (the secret is shown once)",
    response=replies({201: s.WebhookReply}, *WRITE_ERRORS),
)
def webhook_create(request: HttpRequest, body: s.WebhookIn):
    require(request, Role.ADMIN)
    hook = notifications.webhook_create(
        workspace=request.workspace,
        url=body.url,
        events=body.events,
        description=body.description,
        secret=body.secret,
    )
    return json_reply({"data": webhook_out(hook, secret=True)}, status=201)


@webhooks_router.get(
    "/{webhook_id}", summary="Get a webhook", response=replies({200: s.WebhookReply}, 403, 404)
)
def webhook_get(request: HttpRequest, webhook_id: Text):
    require(request, Role.ADMIN)
    hook = approval_selectors.webhook_get(workspace=request.workspace, webhook_id=webhook_id)
    return json_reply({"data": webhook_out(hook)})


@webhooks_router.patch(
    "/{webhook_id}",
    summary="Change url, events, active or description",
    response=replies({200: s.WebhookReply}, 404, *WRITE_ERRORS),
    openapi_extra=body_doc(s.WebhookPatchIn),
)
def webhook_update(request: HttpRequest, webhook_id: Text):
    require(request, Role.ADMIN)
    hook = approval_selectors.webhook_get(workspace=request.workspace, webhook_id=webhook_id)
    changes = checked_body(request, s.WebhookPatchIn)
    hook = notifications.webhook_update(webhook=hook, data=changes)
    return json_reply({"data": webhook_out(hook)})


@webhooks_router.delete(
    "/{webhook_id}",
    summary="Delete a webhook and its delivery log",
    response=replies({204: None}, 403, 404),
)
def webhook_delete(request: HttpRequest, webhook_id: Text):
    require(request, Role.ADMIN)
    hook = approval_selectors.webhook_get(workspace=request.workspace, webhook_id=webhook_id)
    notifications.webhook_delete(webhook=hook)
    return HttpResponse(status=204)


@webhooks_router.post(
    "/{webhook_id}/ping",
    summary="Send a webhook.ping delivery",
    response=replies({202: s.DeliveryReply}, 403, 404),
)
def webhook_ping(request: HttpRequest, webhook_id: Text):
    require(request, Role.ADMIN)
    hook = approval_selectors.webhook_get(workspace=request.workspace, webhook_id=webhook_id)
    return json_reply({"data": delivery_out(notifications.webhook_ping(webhook=hook))}, status=202)


@webhooks_router.get(
    "/{webhook_id}/deliveries",
    summary="The delivery log, newest first",
    response=replies({200: s.DeliveryPage}, 403, 404),
)
def delivery_list(
    request: HttpRequest, webhook_id: Text, paging: Query[PageParams], status: Text | None = None
):
    require(request, Role.ADMIN)
    hook = approval_selectors.webhook_get(workspace=request.workspace, webhook_id=webhook_id)
    deliveries = approval_selectors.delivery_list(webhook=hook, status=status)
    result = selectors.paginate(deliveries, page=paging.page, limit=paging.size)
    return json_reply({"data": [delivery_out(d) for d in result.items], "meta": result.meta()})


@webhooks_router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    summary="Send a delivery again",
    response=replies({202: s.DeliveryReply}, 403, 404),
)
def delivery_redeliver(request: HttpRequest, webhook_id: Text, delivery_id: Text):
    require(request, Role.ADMIN)
    hook = approval_selectors.webhook_get(workspace=request.workspace, webhook_id=webhook_id)
    delivery = notifications.delivery_get(webhook=hook, delivery_id=delivery_id)
    return json_reply(
        {"data": delivery_out(notifications.webhook_redeliver(delivery=delivery))}, status=202
    )
