"""Timers, run by the worker loop every few seconds: expiry (resolve per `on_timeout`) and
escalation (add the escalation assignees and tell them)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from approvals import lifecycle as approval_lifecycle
from approvals import notifications
from approvals.models import Approval, ApprovalDecision, ApprovalStatus
from approvals.services.outcomes import resolve
from executions import lifecycle
from executions.lifecycle import SYSTEM, IllegalTransition

logger = logging.getLogger("steward.approvals")


def approvals_expire_due(*, now: Any = None, limit: int = 100) -> int:
    """Resolve every pending approval whose time ran out, per its `on_timeout`. Returns how many.

    Safe to call from any number of workers at once: each approval is re-read under its lock
    and skipped if someone (a person or another worker) resolved it first.
    """
    now = now or timezone.now()
    due = Approval.objects.filter(status=ApprovalStatus.PENDING, expires_at__lte=now).order_by(
        "expires_at"
    )
    return _each_due(due, _expire, now=now, limit=limit, what="expire")


def approvals_escalate_due(*, now: Any = None, limit: int = 100) -> int:
    """Add the escalation assignees to pending approvals past `escalate_after`, and tell them."""
    now = now or timezone.now()
    due = Approval.objects.filter(
        status=ApprovalStatus.PENDING, escalate_at__lte=now, escalated_at__isnull=True
    ).order_by("escalate_at")
    return _each_due(due, _escalate, now=now, limit=limit, what="escalate")


def _each_due(due: Any, handle: Callable[..., int], *, now: Any, limit: int, what: str) -> int:
    """Run `handle` on each due approval in its own transaction; one bad row must not stop the
    timer for the rest."""
    done = 0
    for approval_id, execution_id in list(due.values_list("pk", "execution_id")[:limit]):
        try:
            with transaction.atomic():
                # Both handlers write the execution: its row first, as an ending transition
                # takes them (approvals.lifecycle.lock_execution).
                approval_lifecycle.lock_execution(execution_id)
                done += handle(approval_id, now=now)
        except IllegalTransition:
            # The execution moved meanwhile (it ended): the approval closes on its own.
            approval_lifecycle.cancel(approval_id)
        except Exception:  # noqa: BLE001 - logged; the next tick retries this row
            logger.exception("could not %s approval %s", what, approval_id)
    return done


def _expire(approval_id: Any, *, now: Any) -> int:
    approval = (
        Approval.objects.select_for_update(of=("self",))
        .select_related("execution", "execution__agent")
        .filter(pk=approval_id, status=ApprovalStatus.PENDING)
        .first()
    )
    if approval is None or approval.expires_at is None or approval.expires_at > now:
        return 0
    waited = (now - approval.created_at).total_seconds()
    reason = f"no decision within {_human(waited)}; on_timeout: {approval.on_timeout}"
    decision = ApprovalDecision.objects.create(
        approval=approval,
        decision="expire",
        reason=reason,
        actor_type="system",
        actor_label="system",
    )
    if approval.execution_id:
        lifecycle.record(
            approval.execution,
            type="expired",
            actor=SYSTEM,
            step_path=approval.step_path,
            step_kind="approval",
            message=f"“{approval.title}” expired: {reason}",
            output={"approval_id": str(approval.pk), "on_timeout": approval.on_timeout},
        )
    status = ApprovalStatus.APPROVED if approval.on_timeout == "approve" else ApprovalStatus.EXPIRED
    votes = [*approval.decisions.exclude(pk=decision.pk), decision]
    resolve(
        approval, status=status, votes=votes, actor=SYSTEM, reason=reason, expired_by_timeout=True
    )
    return 1


def _human(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _escalate(approval_id: Any, *, now: Any) -> int:
    approval = (
        Approval.objects.select_for_update(of=("self",))
        .select_related("execution")
        .filter(pk=approval_id, status=ApprovalStatus.PENDING, escalated_at__isnull=True)
        .first()
    )
    if approval is None:
        return 0
    users = list(get_user_model().objects.filter(username__in=approval.escalate_to_users or []))
    approval.assignee_users.add(*users)
    roles = sorted(set(approval.assignee_roles or []) | set(approval.escalate_to_roles or []))
    approval.assignee_roles = roles
    approval.escalated_at = now
    approval.updated_at = now
    approval.save(update_fields=["assignee_roles", "escalated_at", "updated_at"])
    added = [u.get_username() for u in users] + [f"role:{r}" for r in approval.escalate_to_roles]
    if approval.execution_id:
        lifecycle.record(
            approval.execution,
            type="escalation",
            actor=SYSTEM,
            step_path=approval.step_path,
            step_kind="approval",
            message=f"“{approval.title}” escalated to {', '.join(added) or 'nobody new'}",
            output={"approval_id": str(approval.pk), "added": added},
        )
    approval_lifecycle.publish(approval)
    user_ids = [u.pk for u in users]
    roles_added = list(approval.escalate_to_roles or [])

    def notify() -> None:
        notifications.approval_escalated(
            approval_id=approval_id, user_ids=user_ids, roles=roles_added
        )

    transaction.on_commit(notify)
    return 1
