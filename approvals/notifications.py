"""Telling the outside world: signed webhooks per workspace, and e-mail to assignees.

Nothing here runs inside the engine's critical path. The transition listener only writes a
delivery row and enqueues a task (queue "webhooks"); the HTTP call happens in that task with
short timeouts, and a failed delivery is retried with exponential backoff by enqueueing itself
again for later. A dead endpoint therefore costs the engine one INSERT per event, never a wait.

Signature (Stripe style): header `Steward-Signature: t=<unix seconds>,v1=<hex>` where
`hex = HMAC-SHA256(secret, f"{t}.{raw body}")`. Receivers recompute it over the raw body and
refuse stale timestamps (see `verify_signature`, docs/approvals.md).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

import httpx
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from approvals.models import Approval, DeliveryAttempt, Webhook, WebhookDelivery
from executions.errors import NotFound, ValidationFailed, field_error

logger = logging.getLogger("steward.webhooks")

SIGNATURE_HEADER = "Steward-Signature"
EVENTS = (
    "execution.started",
    "execution.completed",
    "execution.failed",
    "execution.cancelled",
    "execution.rejected",
    "execution.awaiting_approval",
    "execution.awaiting_input",
    "approval.created",
    "approval.decided",
    "approval.expired",
    "approval.escalated",
    "webhook.ping",
)
# Status an execution moved to -> the event it fires.
STATUS_EVENTS = {
    "running": "execution.started",
    "completed": "execution.completed",
    "failed": "execution.failed",
    "cancelled": "execution.cancelled",
    "rejected": "execution.rejected",
    "awaiting_approval": "execution.awaiting_approval",
    "awaiting_input": "execution.awaiting_input",
}


def _setting(name: str, default: Any) -> Any:
    return getattr(settings, name, default)


# --- subscriptions ---------------------------------------------------------------------------


def _check(url: Any, events: Any) -> list[str]:
    errors = []
    parsed = urlparse(str(url or ""))
    if parsed.scheme not in {"http", "https"} or not parsed.netloc:
        errors.append(field_error("url", "must be an http:// or https:// URL"))
    if not isinstance(events, list) or not events:
        errors.append(field_error("events", f"a non-empty list of: *, {', '.join(EVENTS)}"))
    else:
        for event in events:
            if event != "*" and event not in EVENTS and not _is_prefix(event):
                errors.append(field_error("events", f"unknown event {event!r}"))
    if errors:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        raise ValidationFailed(f"invalid webhook: {summary}", details=errors)
    return list(dict.fromkeys(events))


def _is_prefix(event: str) -> bool:
    # "execution.*" / "approval.*" subscribe to a family.
    return event.endswith(".*") and any(e.startswith(event[:-1]) for e in EVENTS)


def webhook_create(
    *,
    workspace: Any,
    url: str,
    events: list[str],
    description: str = "",
    secret: str | None = None,
) -> Webhook:
    """Subscribe a URL to events. The signing secret is generated unless given."""
    events = _check(url, events)
    return Webhook.objects.create(
        workspace=workspace,
        url=url,
        events=events,
        description=(description or "")[:200],
        secret=secret or f"whsec_{secrets.token_urlsafe(24)}",
    )


def webhook_update(*, webhook: Webhook, data: dict[str, Any]) -> Webhook:
    unknown = set(data) - {"url", "events", "active", "description"}
    if unknown:
        raise ValidationFailed(
            "unknown field(s)", details=[field_error(f, "cannot be changed") for f in unknown]
        )
    webhook.events = _check(data.get("url", webhook.url), data.get("events", webhook.events))
    webhook.url = data.get("url", webhook.url)
    if "active" in data:
        webhook.active = bool(data["active"])
    if "description" in data:
        webhook.description = str(data["description"] or "")[:200]
    webhook.save()
    return webhook


def webhook_delete(*, webhook: Webhook) -> None:
    webhook.delete()


def wants(webhook: Webhook, event: str) -> bool:
    for pattern in webhook.events or []:
        if pattern in {"*", event}:
            return True
        if pattern.endswith(".*") and event.startswith(pattern[:-1]):
            return True
    return False


# --- dispatch and delivery -------------------------------------------------------------------


def dispatch(*, workspace_id: Any, event: str, data: dict[str, Any]) -> list[WebhookDelivery]:
    """Queue one delivery per active webhook of the workspace that wants `event`."""
    hooks = [h for h in Webhook.objects.filter(workspace_id=workspace_id, active=True)]
    hooks = [h for h in hooks if wants(h, event)]
    deliveries = []
    for hook in hooks:
        delivery = WebhookDelivery(webhook=hook, event=event, payload={})
        delivery.payload = {
            "id": str(delivery.pk),
            "event": event,
            "created_at": timezone.now().isoformat().replace("+00:00", "Z"),
            "workspace_id": str(workspace_id),
            "data": json.loads(json.dumps(data, cls=DjangoJSONEncoder)),
        }
        delivery.next_attempt_at = timezone.now()
        delivery.save()
        deliveries.append(delivery)
    for delivery in deliveries:
        delivery_id = str(delivery.pk)
        transaction.on_commit(lambda d=delivery_id: _enqueue(d))
    return deliveries


def _enqueue(delivery_id: str, *, run_after: Any = None) -> None:
    from approvals import tasks

    task = tasks.deliver_webhook.using(run_after=run_after) if run_after else tasks.deliver_webhook
    try:
        task.enqueue(delivery_id)
    except Exception:  # noqa: BLE001 - the row stays pending; a redeliver can pick it up
        logger.exception("could not enqueue webhook delivery %s", delivery_id)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify_signature(secret: str, header: str, body: bytes, *, tolerance: int = 300) -> bool:
    """What a receiver does: recompute the HMAC over the raw body, compare in constant time,
    and refuse a timestamp older than `tolerance` seconds (replays)."""
    parts = dict(p.split("=", 1) for p in (header or "").split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def backoff(attempt: int) -> float:
    """Seconds before attempt `attempt + 1`: base, 2×base, 4×base… capped."""
    base = float(_setting("WEBHOOK_RETRY_BASE_SECONDS", 10.0))
    cap = float(_setting("WEBHOOK_RETRY_MAX_SECONDS", 3600.0))
    return min(cap, base * (2 ** max(0, attempt - 1)))


def webhook_deliver(*, delivery_id: Any) -> WebhookDelivery | None:
    """Make one attempt; on failure schedule the next with backoff until attempts run out."""
    with transaction.atomic():
        delivery = (
            WebhookDelivery.objects.select_for_update(of=("self",))
            .select_related("webhook")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None or delivery.status != "pending":
            return delivery
        delivery.attempts += 1
        delivery.save(update_fields=["attempts"])
    hook = delivery.webhook
    body = json.dumps(delivery.payload, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Steward-Webhooks/1",
        SIGNATURE_HEADER: sign(hook.secret, timestamp, body),
        "Steward-Event": delivery.event,
        "Steward-Delivery": str(delivery.pk),
        "Steward-Attempt": str(delivery.attempts),
    }
    timeout = httpx.Timeout(
        float(_setting("WEBHOOK_TIMEOUT_SECONDS", 5.0)),
        connect=float(_setting("WEBHOOK_CONNECT_TIMEOUT_SECONDS", 3.0)),
    )
    started = time.monotonic()
    status_code, error = None, ""
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            reply = client.post(hook.url, content=body, headers=headers)
        status_code = reply.status_code
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}: {reply.text[:300]}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:1000] or type(exc).__name__
    duration = int((time.monotonic() - started) * 1000)
    now = timezone.now()
    DeliveryAttempt.objects.create(
        delivery=delivery, status_code=status_code, error=error, duration_ms=duration
    )
    delivery.last_status_code = status_code
    delivery.last_error = error
    retry_at = None
    if not error:
        delivery.status = "delivered"
        delivery.delivered_at = now
        delivery.next_attempt_at = None
    elif delivery.attempts >= int(_setting("WEBHOOK_MAX_ATTEMPTS", 8)):
        delivery.status = "failed"
        delivery.next_attempt_at = None
        logger.warning("webhook %s gave up on delivery %s: %s", hook.url, delivery.pk, error)
    else:
        retry_at = now + timedelta(seconds=backoff(delivery.attempts))
        delivery.next_attempt_at = retry_at
    delivery.save(
        update_fields=[
            "status",
            "last_status_code",
            "last_error",
            "delivered_at",
            "next_attempt_at",
        ]
    )
    if retry_at is not None:
        _enqueue(str(delivery.pk), run_after=retry_at)
    return delivery


def webhook_redeliver(*, delivery: WebhookDelivery) -> WebhookDelivery:
    """Send a delivery again (after the endpoint was fixed), as a fresh series of attempts."""
    delivery.status = "pending"
    delivery.attempts = 0
    delivery.next_attempt_at = timezone.now()
    delivery.save(update_fields=["status", "attempts", "next_attempt_at"])
    delivery_id = str(delivery.pk)
    transaction.on_commit(lambda: _enqueue(delivery_id))
    return delivery


def webhook_ping(*, webhook: Webhook) -> WebhookDelivery:
    """Queue a `webhook.ping` to this webhook only (whatever events it subscribes to)."""
    delivery = WebhookDelivery(webhook=webhook, event="webhook.ping", payload={})
    delivery.payload = {
        "id": str(delivery.pk),
        "event": "webhook.ping",
        "created_at": timezone.now().isoformat().replace("+00:00", "Z"),
        "workspace_id": str(webhook.workspace_id),
        "data": {"webhook_id": str(webhook.pk), "message": "Steward says hello"},
    }
    delivery.next_attempt_at = timezone.now()
    delivery.save()
    delivery_id = str(delivery.pk)
    transaction.on_commit(lambda: _enqueue(delivery_id))
    return delivery


def delivery_get(*, webhook: Webhook, delivery_id: Any) -> WebhookDelivery:
    from executions.selectors import parse_uuid

    pk = parse_uuid(delivery_id, field="delivery_id", what="delivery")
    delivery = webhook.deliveries.filter(pk=pk).first()
    if delivery is None:
        raise NotFound(f"delivery {delivery_id} not found")
    return delivery


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
    if not Webhook.objects.filter(workspace_id=execution.workspace_id, active=True).exists():
        return
    from executions.serializers import execution_out

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
        from approvals.serializers import approval_out

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
    from approvals import policies

    if policies.assigned(approval):
        _enqueue_mail(approval_id=approval.pk, user_ids=None, reason="created")
    approval_event(approval_id=approval.pk, event="approval.created")


def approval_event(*, approval_id: Any, event: str) -> None:
    from approvals.serializers import approval_out

    approval = Approval.objects.select_related("execution__agent").filter(pk=approval_id).first()
    if approval is None:
        return
    if not Webhook.objects.filter(workspace_id=approval.workspace_id, active=True).exists():
        return
    dispatch(
        workspace_id=approval.workspace_id, event=event, data={"approval": approval_out(approval)}
    )


def approval_escalated(*, approval_id: Any, user_ids: list[Any], roles: list[str]) -> None:
    _enqueue_mail(approval_id=approval_id, user_ids=user_ids, roles=roles, reason="escalated")
    approval_event(approval_id=approval_id, event="approval.escalated")


# --- e-mail ------------------------------------------------------------------------------------


def _enqueue_mail(
    *, approval_id: Any, user_ids: list[Any] | None, reason: str, roles: list[str] | None = None
) -> None:
    from approvals import tasks

    try:
        tasks.send_approval_email.enqueue(
            str(approval_id),
            [str(u) for u in user_ids] if user_ids is not None else None,
            reason,
            roles,
        )
    except Exception:  # noqa: BLE001 - mail is best effort; the inbox and webhooks still show it
        logger.exception("could not enqueue approval e-mail for %s", approval_id)


def approval_link(approval: Any) -> str:
    return f"{str(settings.PUBLIC_URL).rstrip('/')}/approvals/{approval.pk}"


def approval_email_send(
    *,
    approval_id: Any,
    user_ids: list[Any] | None = None,
    reason: str = "created",
    roles: list[str] | None = None,
) -> int:
    """E-mail the assignees (or, on escalation, the people added) a deep link to the approval.
    Returns how many messages were sent. Approvals without assignees e-mail nobody: the inbox,
    the live dashboard and webhooks show them to every reviewer."""
    from approvals import policies
    from approvals.markdown import render_markdown

    approval = Approval.objects.select_related("execution__agent").filter(pk=approval_id).first()
    if approval is None or approval.status != "pending":
        return 0
    if user_ids is None and not policies.assigned(approval):
        return 0
    users = policies.notify_users(approval, roles=roles, users=user_ids)
    recipients = sorted({u.email for u in users if getattr(u, "email", "")})
    if not recipients:
        return 0
    link = approval_link(approval)
    agent = approval.execution.agent.name if approval.execution_id else "an external program"
    lead = "was escalated to you" if reason == "escalated" else "needs your decision"
    subject = f"[Steward] Approval {lead}: {approval.title}"[:200]
    due = (
        f"\nDecide before {approval.expires_at:%Y-%m-%d %H:%M} UTC "
        f"(then it is resolved as: {approval.on_timeout})."
        if approval.expires_at
        else ""
    )
    payload = json.dumps(approval.payload, indent=2, default=str) if approval.payload else ""
    text = (
        f"“{approval.title}” from {agent} {lead}.\n\n{approval.description}\n\n"
        + (f"Proposed:\n{payload}\n\n" if payload else "")
        + f"Open it: {link}{due}\n"
    )
    html = (
        f"<p>“{_escape(approval.title)}” from {_escape(agent)} {lead}.</p>"
        f"{render_markdown(approval.description)}"
        + (f"<pre>{_escape(payload)}</pre>" if payload else "")
        + f'<p><a href="{_escape(link)}">Open the approval</a>{_escape(due)}</p>'
    )
    sent = 0
    for recipient in recipients:  # one message each: assignees do not see each other's address
        message = EmailMultiAlternatives(subject, text, None, [recipient])
        message.attach_alternative(html, "text/html")
        sent += message.send()
    return sent


def _escape(value: str) -> str:
    from django.utils.html import escape

    return str(escape(value))
