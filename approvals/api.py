"""Native `/api/v1/approvals` and `/api/v1/webhooks` routers (thin: parse, call a service or
selector, shape the reply)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import Field, Router, Schema

from approvals import notifications, policies, services
from approvals import selectors as approval_selectors
from approvals.models import ApprovalStatus
from approvals.serializers import approval_out, comment_out, delivery_out, webhook_out
from executions import selectors
from executions.errors import Forbidden, ValidationFailed, field_error
from executions.models import Role, role_at_least

router = Router(tags=["approvals"])
webhooks_router = Router(tags=["webhooks"])

MAX_WAIT_SECONDS = 300.0


def decider(request: HttpRequest) -> policies.Decider:
    return policies.decider_for(request.actor, workspace=request.workspace, role=request.role)


def require(request: HttpRequest, role: str) -> None:
    if not role_at_least(request.role, role):
        raise Forbidden(f"this API key's role ({request.role}) cannot do this; it needs {role}")


def shaped(request: HttpRequest, approval) -> dict[str, Any]:
    return approval_out(approval, can_decide=policies.can_decide(approval, decider(request)))


class DecideIn(Schema):
    decision: str = Field(..., description="approve | reject | edit | respond")
    reason: str | None = None
    payload: Any = Field(None, description="the edited payload (edit)")
    response: Any = Field(None, description="free text or a form answer (respond)")
    option: Any = Field(None, description="the chosen option's value")
    options: list[Any] | None = Field(None, description="several options (multiple choice)")


class BulkDecideIn(Schema):
    decision: str
    reason: str | None = None
    ids: list[str] | None = None
    filter: dict[str, Any] | None = Field(
        None, description="instead of ids: the same filters as GET /approvals (pending only)"
    )


class CommentIn(Schema):
    body: str


@router.get("", summary="List approvals (soonest due first)")
def approval_list(
    request: HttpRequest,
    status: str | None = None,
    assigned: str | None = None,
    agent_id: str | None = None,
    execution_id: str | None = None,
    created_after: str | None = None,
    created_before: str | None = None,
    overdue: bool | None = None,
):
    filters = approval_selectors.ApprovalFilters.from_params(request.GET)
    page, limit = selectors.page_params(request.GET)
    me = decider(request)
    approvals = approval_selectors.approval_list(
        workspace=request.workspace, filters=filters, decider=me
    )
    result = selectors.paginate(approvals, page=page, limit=limit)
    return JsonResponse(
        {
            "data": [
                approval_out(a, can_decide=policies.can_decide(a, me), detail=False)
                for a in result.items
            ],
            "meta": result.meta(),
        }
    )


@router.post("/bulk-decide", summary="Decide many approvals at once (per-item results)")
def approval_bulk_decide(request: HttpRequest, body: BulkDecideIn):
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
    return JsonResponse({"data": results, "meta": {"total": len(results), "counts": counts}})


@router.get("/{approval_id}", summary="Get an approval (with its decisions)")
def approval_get(request: HttpRequest, approval_id: str):
    approval = approval_selectors.approval_get(workspace=request.workspace, approval_id=approval_id)
    return JsonResponse({"data": shaped(request, approval)})


@router.post("/{approval_id}/decide", summary="Approve, reject, edit or respond")
def approval_decide(request: HttpRequest, approval_id: str, body: DecideIn):
    approval = approval_selectors.approval_get(workspace=request.workspace, approval_id=approval_id)
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
        idempotency_key=request.headers.get("Idempotency-Key") or None,
    )
    approval = approval_selectors.approval_get(workspace=request.workspace, approval_id=approval_id)
    reply = JsonResponse({"data": shaped(request, approval)})
    if decided.replayed:
        reply["Idempotent-Replayed"] = "true"
    return reply


@router.get("/{approval_id}/comments", summary="Comments on an approval, oldest first")
def comment_list(request: HttpRequest, approval_id: str):
    approval = approval_selectors.approval_get(workspace=request.workspace, approval_id=approval_id)
    page, limit = selectors.page_params(request.GET)
    comments = approval_selectors.comment_list(approval=approval).select_related("actor_user")
    result = selectors.paginate(comments, page=page, limit=limit)
    return JsonResponse({"data": [comment_out(c) for c in result.items], "meta": result.meta()})


@router.post("/{approval_id}/comments", summary="Comment on an approval")
def comment_add(request: HttpRequest, approval_id: str, body: CommentIn):
    require(request, Role.REVIEWER)
    approval = approval_selectors.approval_get(workspace=request.workspace, approval_id=approval_id)
    comment = services.approval_comment_add(approval=approval, actor=request.actor, body=body.body)
    return JsonResponse({"data": comment_out(comment)}, status=201)


@router.get("/{approval_id}/wait", summary="Long poll: return once decided (or at timeout)")
async def approval_wait(request: HttpRequest, approval_id: str, timeout: float = 30.0):
    """Polls one indexed column with asyncio.sleep between reads, so a thousand waiting
    programs hold no thread; the reply is the approval as it is when decided or at timeout
    (`status` still `pending` then: call again)."""
    approval = await sync_to_async(approval_selectors.approval_get)(
        workspace=request.workspace, approval_id=approval_id
    )
    timeout = max(0.0, min(float(timeout), MAX_WAIT_SECONDS))
    deadline = time.monotonic() + timeout
    delay = 0.05
    status = approval.status
    while status == ApprovalStatus.PENDING and time.monotonic() < deadline:
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.5)
        status = await sync_to_async(approval_selectors.approval_status)(approval_id=approval.pk)
    approval = await sync_to_async(approval_selectors.approval_get)(
        workspace=request.workspace, approval_id=approval.pk
    )
    body = await sync_to_async(shaped)(request, approval)
    return JsonResponse({"data": body, "meta": {"decided": status != ApprovalStatus.PENDING}})


# --- webhooks --------------------------------------------------------------------------------


class WebhookIn(Schema):
    url: str
    events: list[str] = Field(default_factory=lambda: ["*"])
    description: str = ""
    secret: str | None = Field(None, description="leave out to have one generated")


@webhooks_router.get("", summary="List the workspace's webhooks")
def webhook_list(request: HttpRequest):
    require(request, Role.ADMIN)
    hooks = approval_selectors.webhook_list(workspace=request.workspace)
    return JsonResponse(
        {"data": [webhook_out(h) for h in hooks], "meta": {"events": notifications.EVENTS}}
    )


@webhooks_router.post("", summary="Subscribe a URL to events (the secret is shown once)")
def webhook_create(request: HttpRequest, body: WebhookIn):
    require(request, Role.ADMIN)
    hook = notifications.webhook_create(
        workspace=request.workspace,
        url=body.url,
        events=body.events,
        description=body.description,
        secret=body.secret,
    )
    return JsonResponse({"data": webhook_out(hook, secret=True)}, status=201)


@webhooks_router.get("/{webhook_id}", summary="Get a webhook")
def webhook_get(request: HttpRequest, webhook_id: str):
    require(request, Role.ADMIN)
    hook = approval_selectors.webhook_get(workspace=request.workspace, webhook_id=webhook_id)
    return JsonResponse({"data": webhook_out(hook)})


@webhooks_router.patch("/{webhook_id}", summary="Change url, events, active or description")
def webhook_update(request: HttpRequest, webhook_id: str):
    require(request, Role.ADMIN)
    from executions.api import optional_body

    hook = approval_selectors.webhook_get(workspace=request.workspace, webhook_id=webhook_id)
    hook = notifications.webhook_update(webhook=hook, data=optional_body(request))
    return JsonResponse({"data": webhook_out(hook)})


@webhooks_router.delete("/{webhook_id}", summary="Delete a webhook and its delivery log")
def webhook_delete(request: HttpRequest, webhook_id: str):
    require(request, Role.ADMIN)
    hook = approval_selectors.webhook_get(workspace=request.workspace, webhook_id=webhook_id)
    notifications.webhook_delete(webhook=hook)
    return HttpResponse(status=204)


@webhooks_router.post("/{webhook_id}/ping", summary="Send a webhook.ping delivery")
def webhook_ping(request: HttpRequest, webhook_id: str):
    require(request, Role.ADMIN)
    hook = approval_selectors.webhook_get(workspace=request.workspace, webhook_id=webhook_id)
    return JsonResponse(
        {"data": delivery_out(notifications.webhook_ping(webhook=hook))}, status=202
    )


@webhooks_router.get("/{webhook_id}/deliveries", summary="The delivery log, newest first")
def delivery_list(request: HttpRequest, webhook_id: str, status: str | None = None):
    require(request, Role.ADMIN)
    hook = approval_selectors.webhook_get(workspace=request.workspace, webhook_id=webhook_id)
    page, limit = selectors.page_params(request.GET)
    result = selectors.paginate(
        approval_selectors.delivery_list(webhook=hook, status=status), page=page, limit=limit
    )
    return JsonResponse({"data": [delivery_out(d) for d in result.items], "meta": result.meta()})


@webhooks_router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver", summary="Send a delivery again"
)
def delivery_redeliver(request: HttpRequest, webhook_id: str, delivery_id: str):
    require(request, Role.ADMIN)
    hook = approval_selectors.webhook_get(workspace=request.workspace, webhook_id=webhook_id)
    delivery = notifications.delivery_get(webhook=hook, delivery_id=delivery_id)
    return JsonResponse(
        {"data": delivery_out(notifications.webhook_redeliver(delivery=delivery))}, status=202
    )
