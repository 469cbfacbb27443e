"""What a resolved approval does: its status set through the approvals lifecycle, its execution
moved on (running again, rejected or failed), webhooks and e-mails after commit."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from approvals import lifecycle as approval_lifecycle
from approvals import notifications
from approvals.models import Approval, ApprovalDecision, ApprovalStatus
from executions import lifecycle, tasks
from executions.errors import Conflict
from executions.lifecycle import Actor, Status
from executions.models import AgentType, Execution
from executions.serializers import iso

APPROVING = frozenset({"approve", "edit", "respond"})


def already_decided(approval: Approval) -> Conflict:
    last = approval.decisions.order_by("-created_at", "-id").first()
    who = approval.decided_by_label or (last.actor_label if last else "someone")
    when = iso(approval.decided_at)
    what = approval.status
    message = f"approval was already {what} by {who} at {when}"
    if approval.status == ApprovalStatus.CANCELLED:
        message = f"approval was cancelled at {iso(approval.updated_at)} (its execution ended)"
    return Conflict(
        message,
        code="already_decided",
        details={
            "status": approval.status,
            "decided_by": who,
            "decided_at": when,
            "decision": last.decision if last else None,
            "reason": last.reason if last else "",
        },
    )


def resolve(
    approval: Approval,
    *,
    status: str,
    votes: list[ApprovalDecision],
    actor: Actor,
    reason: str,
    expired_by_timeout: bool = False,
) -> None:
    """Set the outcome on the approval and move its execution on (lock held by the caller)."""
    edited = [v.payload for v in votes if v.decision == "edit" and v.payload is not None]
    responses = [v.response for v in votes if v.response is not None and v.decision in APPROVING]
    chosen = [v.options for v in votes if v.options is not None and v.decision in APPROVING]
    approval_lifecycle.resolve(
        approval,
        status=status,
        decided_by=actor.label,
        result_payload=edited[-1] if edited else approval.payload,
        response=responses[-1] if responses else None,
        chosen_options=chosen[-1] if chosen else None,
    )
    execution = approval.execution
    if execution is not None:
        _move_execution(approval, execution, actor=actor, reason=reason)
    approval_id, workspace_id = approval.pk, approval.workspace_id
    event = "approval.expired" if expired_by_timeout else "approval.decided"
    transaction.on_commit(lambda: _notify_decided(approval_id, workspace_id, event))


def _move_execution(approval: Approval, execution: Execution, *, actor: Actor, reason: str):
    run_again = False
    if approval.status == ApprovalStatus.APPROVED:
        lifecycle.transition(
            execution,
            Status.RUNNING,
            type="approved",
            actor=actor,
            step_path=approval.step_path,
            step_kind="approval",
            output=approval.response if approval.response is not None else approval.result_payload,
            message=f"approved by {actor.label}" + (f": {reason}" if reason else ""),
        )
        run_again = True
    elif approval.reject_ends or (
        approval.on_timeout == "fail" and approval.status == ApprovalStatus.EXPIRED
    ):
        # The run ends here: failed when an expiry says so, otherwise rejected.
        if approval.on_timeout == "fail" and approval.status == ApprovalStatus.EXPIRED:
            to, kind = Status.FAILED, "error"
            message = f"approval “{approval.title}” expired without a decision"
        else:
            to, kind = Status.REJECTED, "rejected"
            verb = "expired" if approval.status == ApprovalStatus.EXPIRED else "rejected"
            message = f"approval “{approval.title}” {verb} by {actor.label}" + (
                f": {reason}" if reason else ""
            )
        lifecycle.transition(
            execution,
            to,
            type=kind,
            actor=actor,
            step_path=approval.step_path,
            step_kind="approval",
            message=message,
            fields={"error": message},
        )
    else:
        # The step has an on_reject branch (or the external program carries on): run again.
        lifecycle.transition(
            execution,
            Status.RUNNING,
            type="rejected",
            actor=actor,
            step_path=approval.step_path,
            step_kind="approval",
            message=f"rejected by {actor.label}" + (f": {reason}" if reason else ""),
        )
        run_again = True
    if run_again and execution.agent.type != AgentType.EXTERNAL:
        execution_id = execution.pk
        transaction.on_commit(lambda: tasks.enqueue_run(execution_id))


def _notify_decided(approval_id: Any, workspace_id: Any, event: str) -> None:
    # The per-process cached "any webhooks?" first: without one, no re-read of the approval
    # just decided (a statement saved on most decisions).
    if notifications.has_webhooks(workspace_id):
        notifications.approval_event(approval_id=approval_id, event=event)
