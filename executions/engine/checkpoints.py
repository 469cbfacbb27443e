"""The contract between the engine and the approvals app.

Creating (engine):
    `create_approval(execution, step_path=…, spec=…, payload=…, source=…)` is called by the
    runner inside the same transaction that moves the execution running → awaiting_approval
    (type "wait") and releases its lease, so an Approval is never visible before its execution
    is parked on it. The engine parks on one approval at a time. Calling it again for the same
    (execution, step_path) returns the existing approval.

Deciding (approvals app):
    - approve (or edit / respond): set status "approved", `result_payload` (the possibly edited
      payload) and/or `response`; move the execution awaiting_approval → running (type
      "approved") and enqueue a run (`executions.tasks.enqueue_run`) on commit.
    - reject: set status "rejected". When `approval.reject_ends` is true (the step has no
      on_reject branch) move the execution awaiting_approval → rejected (type "rejected"); the
      engine never runs again. Otherwise move it → running and enqueue a run: the engine takes
      the on_reject branch (workflows), tells the model the call was refused (agent tools), or
      returns from `ctx.approval()` with the refusal (Python agents).
    - expiry: resolve per `on_timeout` the same way (approve → as approved with the payload,
      reject → as rejected, fail → move the execution to failed).

Reading (engine): on the next run `approval_outcome(execution, step_path)` returns the decided
Approval (status approved / rejected / expired) for the step, or None while it is pending.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from executions.models import Execution

DECIDED = ("approved", "rejected", "expired")
DEFAULT_ACTIONS = ["approve", "reject"]


def approval_outcome(execution: Execution, step_path: str) -> Any:
    """The decided Approval for this step, or None if there is none yet (or it is pending)."""
    from approvals.models import Approval

    return (
        Approval.objects.filter(execution=execution, step_path=step_path, status__in=DECIDED)
        .order_by("-created_at")
        .first()
    )


def pending_approval(execution: Execution, step_path: str) -> Any:
    from approvals.models import Approval

    return Approval.objects.filter(
        execution=execution, step_path=step_path, status="pending"
    ).first()


def create_approval(
    execution: Execution,
    *,
    step_path: str,
    spec: dict[str, Any],
    payload: Any,
    source: str = "step",
    reject_ends: bool | None = None,
) -> Any:
    """Create (or return the existing) pending Approval for a step from a definition's spec.

    Spec keys (all optional but title): title, description, allowed_actions, options,
    multiple, response_schema, payload_schema, assignees (usernames), assignee_roles,
    required_approvals, forbid_self_approval, timeout_seconds / expires_in (seconds),
    on_timeout (approve | reject | fail), escalate_after_seconds, escalate_to_users,
    escalate_to_roles, and on_reject (whose presence means a rejection continues the run).
    """
    from approvals.models import Approval

    existing = pending_approval(execution, step_path)
    if existing is not None:
        return existing
    now = timezone.now()
    expires_in = spec.get("timeout_seconds", spec.get("expires_in"))
    escalate_after = spec.get("escalate_after_seconds")
    if reject_ends is None:
        reject_ends = "on_reject" not in spec
    approval = Approval.objects.create(
        workspace_id=execution.workspace_id,
        execution=execution,
        step_path=step_path,
        source=source,
        title=str(spec.get("title") or "Approval needed")[:300],
        description=str(spec.get("description") or ""),
        payload=payload,
        payload_schema=spec.get("payload_schema"),
        allowed_actions=list(spec.get("allowed_actions") or DEFAULT_ACTIONS),
        options=spec.get("options"),
        multiple=bool(spec.get("multiple", False)),
        response_schema=spec.get("response_schema"),
        assignee_roles=list(spec.get("assignee_roles") or []),
        forbid_self_approval=bool(spec.get("forbid_self_approval", False)),
        required_approvals=max(1, int(spec.get("required_approvals", 1) or 1)),
        reject_ends=bool(reject_ends),
        expires_at=now + timedelta(seconds=float(expires_in)) if expires_in else None,
        on_timeout=str(spec.get("on_timeout") or "reject"),
        escalate_at=now + timedelta(seconds=float(escalate_after)) if escalate_after else None,
        escalate_to_users=list(spec.get("escalate_to_users") or []),
        escalate_to_roles=list(spec.get("escalate_to_roles") or []),
        created_at=now,
        updated_at=now,
    )
    usernames = spec.get("assignees") or spec.get("assignee_users") or []
    if usernames:
        from django.contrib.auth import get_user_model

        users = get_user_model().objects.filter(username__in=list(usernames))
        approval.assignee_users.set(users)
    _publish(approval)
    return approval


def _publish(approval: Any) -> None:
    from executions import events

    approval_id, workspace_id = approval.pk, approval.workspace_id
    execution_id = approval.execution_id
    transaction.on_commit(
        lambda: events.approval_changed(
            approval_id=approval_id,
            workspace_id=workspace_id,
            execution_id=execution_id,
            status="pending",
        )
    )


def approved_value(approval: Any) -> Any:
    """What an approved step yields: the response when one was asked for, otherwise the
    (possibly edited) payload."""
    if approval.response is not None:
        if approval.result_payload is not None and approval.result_payload != approval.payload:
            return {"payload": approval.result_payload, "response": approval.response}
        return approval.response
    if approval.chosen_options is not None:
        return {
            "payload": approval.result_payload or approval.payload,
            "options": approval.chosen_options,
        }
    return approval.result_payload if approval.result_payload is not None else approval.payload


def is_approved(approval: Any) -> bool:
    # An expiry resolved as "approve" is recorded by the approvals app as approved; an
    # "expired" row without that means the timeout rejected it.
    return approval.status == "approved"


def refusal(approval: Any) -> dict[str, Any]:
    reason = ""
    decision = approval.decisions.order_by("-created_at", "-id").first() if approval.pk else None
    if decision is not None:
        reason = decision.reason
    return {
        "rejected": True,
        "status": approval.status,
        "reason": reason,
        "decided_by": approval.decided_by_label,
    }
