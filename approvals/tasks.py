"""Background tasks of the approvals app (queue "webhooks"): thin wrappers over services.

Outbound notifications live on their own queue so a slow mail server or a dead webhook
endpoint never delays the "executions" queue the engine works from.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import OperationalError
from django.tasks import task
from django.utils import timezone

from approvals import notifications, services


@task(queue_name="webhooks")
def deliver_webhook(delivery_id: str) -> None:
    try:
        notifications.webhook_deliver(delivery_id=delivery_id)
    except OperationalError:
        # A busy database (SQLite's write lock under load) must not lose the delivery: the
        # row is still pending, so try again shortly.
        later = timezone.now() + timedelta(seconds=1)
        deliver_webhook.using(run_after=later).enqueue(delivery_id)


@task(queue_name="webhooks")
def send_approval_email(
    approval_id: str,
    user_ids: list[str] | None = None,
    reason: str = "created",
    roles: list[str] | None = None,
) -> int:
    return notifications.approval_email_send(
        approval_id=approval_id, user_ids=user_ids, reason=reason, roles=roles
    )


@task(queue_name="webhooks")
def approvals_tick() -> dict[str, Any]:
    """Expire and escalate what is due (the worker loop calls the services directly; this task
    exists for deployments that schedule it instead, e.g. from cron)."""
    return {
        "expired": services.approvals_expire_due(),
        "escalated": services.approvals_escalate_due(),
    }
