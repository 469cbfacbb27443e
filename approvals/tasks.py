"""Scheduled work of the approvals app: a thin wrapper over services for deployments that run
the timers from a scheduler (cron) instead of the worker loop.

The notification tasks (webhook deliveries, e-mail) are defined beside the code they run, in
`approvals/notifications/`, on their own queue ("webhooks") so a slow mail server or a dead
webhook endpoint never delays the engine.
"""

from __future__ import annotations

from typing import Any

from django.tasks import task

from approvals import services


@task(queue_name="webhooks")
def approvals_tick() -> dict[str, Any]:
    """Expire and escalate what is due (the worker loop calls the services directly)."""
    return {
        "expired": services.approvals_expire_due(),
        "escalated": services.approvals_escalate_due(),
    }
