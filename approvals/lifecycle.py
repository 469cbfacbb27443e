"""Approval statuses and the one module that changes them (DESIGN.md §3).

`resolve()` ends a pending approval with a decision or an expiry, `close_for_execution()` cancels
the ones left open when their execution ends, and `publish()` tells the inboxes and the execution
page after commit. Nothing else writes `Approval.status`, so every change is seen live: an open
inbox never keeps showing a cancelled run's approval as pending.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from approvals.models import Approval, ApprovalStatus
from executions.live import events
from executions.models import Execution

# pending is the only status an approval leaves; the others are final.
FINAL = frozenset(
    {
        ApprovalStatus.APPROVED,
        ApprovalStatus.REJECTED,
        ApprovalStatus.EXPIRED,
        ApprovalStatus.CANCELLED,
    }
)


def resolve(
    approval: Approval,
    *,
    status: str,
    decided_by: str,
    result_payload: Any = None,
    response: Any = None,
    chosen_options: Any = None,
) -> None:
    """Set the outcome of a pending approval whose row lock the caller holds."""
    if status not in FINAL:
        raise ValueError(f"an approval cannot be resolved as {status!r}")
    if approval.status != ApprovalStatus.PENDING:
        raise ValueError(f"approval {approval.pk} is already {approval.status}")
    now = timezone.now()
    approval.status = status
    approval.decided_at = now
    approval.decided_by_label = decided_by
    approval.updated_at = now
    if status == ApprovalStatus.APPROVED:
        approval.result_payload = result_payload
        approval.response = response
        approval.chosen_options = chosen_options
    approval.save(
        update_fields=[
            "status",
            "decided_at",
            "decided_by_label",
            "updated_at",
            "result_payload",
            "response",
            "chosen_options",
        ]
    )
    publish(approval)


def cancel(approval_id: Any) -> bool:
    """Cancel one approval if it is still pending (its execution moved on without it)."""
    with transaction.atomic():
        approval = (
            Approval.objects.select_for_update(of=("self",))
            .filter(pk=approval_id, status=ApprovalStatus.PENDING)
            .first()
        )
        if approval is None:
            return False
        _cancel(approval)
    return True


def lock_execution(execution_id: Any) -> None:
    """Take an execution's row lock before any of its approvals' (call it first in the
    transaction). One order for everyone: an ending transition locks the execution, then
    closes its approvals (close_for_execution); a decision or an expiry that locked the
    approval first and then wrote the execution deadlocked with it on PostgreSQL — a program
    cancelling while a reviewer approved got a 500 (found by schemathesis's seeded pass)."""
    if execution_id is not None:
        list(Execution.objects.select_for_update().filter(pk=execution_id).values_list("pk"))


def close_for_execution(execution: Execution) -> int:
    """Cancel the approvals still pending on an execution that just ended (called by the
    execution lifecycle inside the transaction of the ending transition)."""
    open_ = list(
        Approval.objects.select_for_update(of=("self",)).filter(
            execution_id=execution.pk, status=ApprovalStatus.PENDING
        )
    )
    for approval in open_:
        _cancel(approval)
    return len(open_)


def _cancel(approval: Approval) -> None:
    approval.status = ApprovalStatus.CANCELLED
    approval.updated_at = timezone.now()
    approval.save(update_fields=["status", "updated_at"])
    publish(approval)


def publish(approval: Approval) -> None:
    """Tell the inboxes and the execution's page about this approval once the change commits
    (creation, a vote, a comment, an escalation, or a status change)."""
    approval_id, workspace_id = approval.pk, approval.workspace_id
    execution_id, status = approval.execution_id, approval.status
    transaction.on_commit(
        lambda: events.approval_changed(
            approval_id=approval_id,
            workspace_id=workspace_id,
            execution_id=execution_id,
            status=status,
        )
    )
