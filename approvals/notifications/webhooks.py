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
from django.core.serializers.json import DjangoJSONEncoder
from django.db import OperationalError, transaction
from django.tasks import task
from django.utils import timezone

from approvals.models import DeliveryAttempt, Webhook, WebhookDelivery
from approvals.notifications import targets
from executions.errors import NotFound, ValidationFailed, field_error
from executions.selectors import parse_uuid

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
    elif blocked := targets.check_at_creation(str(url)):
        errors.append(field_error("url", blocked))
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


@task(queue_name="webhooks")
def deliver_webhook(delivery_id: str) -> None:
    """The background task of one delivery (queue "webhooks", run by the worker processes)."""
    try:
        webhook_deliver(delivery_id=delivery_id)
    except OperationalError:
        # A busy database (SQLite's write lock under load) must not lose the delivery: the
        # row is still pending, so try again shortly.
        later = timezone.now() + timedelta(seconds=1)
        deliver_webhook.using(run_after=later).enqueue(delivery_id)


def _enqueue(delivery_id: str, *, run_after: Any = None) -> None:
    task = deliver_webhook.using(run_after=run_after) if run_after else deliver_webhook
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
        # No redirects (a 3xx could point anywhere) and no proxy from the environment (it would
        # connect in our place, to an address we did not vet).
        with httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            reply = targets.post(client, hook.url, content=body, headers=headers)
        status_code = reply.status_code
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}: {reply.text[:300]}"
    except targets.BlockedTarget as exc:
        error = f"refused: {exc}"[:1000]
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
    pk = parse_uuid(delivery_id, field="delivery_id", what="delivery")
    delivery = webhook.deliveries.filter(pk=pk).first()
    if delivery is None:
        raise NotFound(f"delivery {delivery_id} not found")
    return delivery
