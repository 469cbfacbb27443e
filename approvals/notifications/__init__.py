"""Telling the outside world about executions and approvals: signed webhooks (webhooks.py,
with targets.py vetting where they may point) and e-mail to assignees (email.py).

This module holds the listeners that decide what to send; `from approvals import notifications`
also reaches the webhook and e-mail functions the API, pages and tasks call.
"""

from __future__ import annotations

import time
from typing import Any

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.utils import timezone

from approvals import policies
from approvals.models import Approval, Webhook
from approvals.notifications.email import _enqueue_mail, approval_email_send, approval_link
from approvals.notifications.targets import BlockedTarget
from approvals.notifications.webhooks import (
    EVENTS,
    SIGNATURE_HEADER,
    STATUS_EVENTS,
    backoff,
    delivery_get,
    dispatch,
    sign,
    verify_signature,
    wants,
    webhook_create,
    webhook_delete,
    webhook_deliver,
    webhook_ping,
    webhook_redeliver,
    webhook_update,
)
from approvals.serializers import approval_out
from executions.serializers import execution_out

__all__ = [
    "EVENTS",
    "SIGNATURE_HEADER",
    "STATUS_EVENTS",
    "BlockedTarget",
    "approval_created",
    "approval_email_send",
    "approval_escalated",
    "approval_event",
    "approval_link",
    "backoff",
    "delivery_get",
    "dispatch",
    "on_transition",
    "sign",
    "verify_signature",
    "wants",
    "webhook_create",
    "webhook_delete",
    "webhook_deliver",
    "webhook_ping",
    "webhook_redeliver",
    "webhook_update",
]

# --- does this workspace have webhooks? ------------------------------------------------------

# Asked after every status change of every execution, and most workspaces have none: the answer
# is kept a few seconds per process, dropped at once when this process saves or deletes a
# webhook; one saved in another process is seen by this one within WEBHOOKS_CACHE_SECONDS.
WEBHOOKS_CACHE_SECONDS = 5.0
_has_webhooks: dict[Any, tuple[float, bool]] = {}


def has_webhooks(workspace_id: Any) -> bool:
    now = time.monotonic()
    cached = _has_webhooks.get(workspace_id)
    if cached is not None and now - cached[0] < WEBHOOKS_CACHE_SECONDS:
        return cached[1]
    found = Webhook.objects.filter(workspace_id=workspace_id, active=True).exists()
    if len(_has_webhooks) > 10000:
        _has_webhooks.clear()
    _has_webhooks[workspace_id] = (now, found)
    return found


@receiver([post_save, post_delete], sender=Webhook)
def _webhooks_changed(sender: Any, instance: Webhook, **kwargs: Any) -> None:
    _has_webhooks.pop(instance.workspace_id, None)


# --- what fires events -----------------------------------------------------------------------


def on_transition(*, execution: Any, transition: Any) -> None:
    """events.add_listener hook: runs after commit for every transition of every execution."""
    moved = transition.from_status != transition.to_status
    if not moved:
        return
    if transition.to_status == "awaiting_approval":
        for approval in Approval.objects.filter(
            execution_id=execution.pk, status="pending", notified_at__isnull=True
        ):
            approval_created(approval=approval)
    event = STATUS_EVENTS.get(transition.to_status)
    if event is None:
        return
    # Cheap exit: most workspaces have no webhooks, so skip shaping the payload.
    if not has_webhooks(execution.workspace_id):
        return
    execution = (
        type(execution).objects.select_related("agent", "agent_version").get(pk=execution.pk)
    )
    data = {
        "execution": execution_out(execution),
        "transition": {
            "seq": transition.seq,
            "type": transition.type,
            "from_status": transition.from_status,
            "to_status": transition.to_status,
            "step_path": transition.step_path,
            "message": transition.message,
            "actor": {"type": transition.actor_type, "label": transition.actor_label},
        },
    }
    if transition.to_status == "awaiting_approval":
        pending = Approval.objects.filter(execution_id=execution.pk, status="pending")
        data["approvals"] = [approval_out(a) for a in pending]
    dispatch(workspace_id=execution.workspace_id, event=event, data=data)


def approval_created(*, approval: Approval) -> None:
    """First notice of a new checkpoint: e-mail its assignees and fire `approval.created`.
    Claimed with a conditional UPDATE so a re-run of the listener never notifies twice."""
    claimed = Approval.objects.filter(pk=approval.pk, notified_at__isnull=True).update(
        notified_at=timezone.now()
    )
    if not claimed:
        return
    if policies.assigned(approval):
        _enqueue_mail(approval_id=approval.pk, user_ids=None, reason="created")
    approval_event(approval_id=approval.pk, event="approval.created")


def approval_event(*, approval_id: Any, event: str) -> None:
    approval = Approval.objects.select_related("execution__agent").filter(pk=approval_id).first()
    if approval is None:
        return
    if not has_webhooks(approval.workspace_id):
        return
    dispatch(
        workspace_id=approval.workspace_id, event=event, data={"approval": approval_out(approval)}
    )


def approval_escalated(*, approval_id: Any, user_ids: list[Any], roles: list[str]) -> None:
    _enqueue_mail(approval_id=approval_id, user_ids=user_ids, roles=roles, reason="escalated")
    approval_event(approval_id=approval_id, event="approval.escalated")
