"""Asking for a decision: an external program parks its execution on a new approval, or the
engine creates the approval of a step inside the transaction that parks the run."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from approvals import lifecycle as approval_lifecycle
from approvals import policies
from approvals.models import Approval, ApprovalStatus
from executions import lifecycle
from executions.errors import Conflict, ValidationFailed
from executions.lifecycle import SYSTEM, Actor, Status
from executions.models import AgentType, Execution
from executions.schemas import violations


def approval_request(
    *, execution: Execution, spec: dict[str, Any], payload: Any = None, actor: Actor = SYSTEM
) -> Approval:
    """An external program asks for a decision: park its execution on a new Approval.

    Only executions of `external` agents are parked this way; the engine parks its own runs
    through `executions.engine.checkpoints.create_approval`.
    """
    if execution.agent.type != AgentType.EXTERNAL:
        raise Conflict(
            f"execution {execution.pk} is run by Steward's engine (agent type "
            f"{execution.agent.type}); only executions of external agents request approvals "
            "through the API",
            code="not_external",
        )
    values = policies.fields_from_spec(spec)
    schema = values.get("payload_schema")
    if schema and payload is not None and (found := violations(schema, payload, prefix="payload")):
        raise ValidationFailed("payload does not match payload_schema", details=found)
    with transaction.atomic():
        if execution.status == Status.PENDING:
            lifecycle.transition(execution, Status.RUNNING, type="start", actor=actor)
        if execution.status == Status.AWAITING_APPROVAL:
            waiting = execution.approvals.filter(status=ApprovalStatus.PENDING).first()
            raise Conflict(
                "the execution is already waiting on an approval; decide it first",
                code="already_awaiting_approval",
                details={"approval_id": str(waiting.pk) if waiting else None},
            )
        count = execution.approvals.count()
        step_path = str(spec.get("step_path") or spec.get("step") or f"approval-{count + 1}")[:200]
        lifecycle.transition(
            execution,
            Status.AWAITING_APPROVAL,
            type="wait",
            actor=actor,
            step_path=step_path,
            step_kind="approval",
            input=payload,
            message=values["title"],
        )
        approval = _create(
            execution=execution,
            values=values,
            payload=payload,
            step_path=step_path,
            source="external",
        )
    return approval


def approval_create(
    *,
    execution: Execution,
    step_path: str,
    spec: dict[str, Any],
    payload: Any,
    source: str = "step",
    reject_ends: bool | None = None,
) -> Approval:
    """Create the pending Approval for a step from its spec, reading every option the docs list
    (durations like "2s", assignees as users and roles, quorum, escalation…); a bad spec is a
    ValidationFailed naming the field. For the engine's `checkpoints.create_approval`: call it
    inside the transaction that parks the execution. Returns the existing pending approval of
    the same step when there is one."""
    existing = Approval.objects.filter(
        execution=execution, step_path=step_path, status=ApprovalStatus.PENDING
    ).first()
    if existing is not None:
        return existing
    values = policies.fields_from_spec({"title": "Approval needed", **spec})
    if reject_ends is not None:
        values["reject_ends"] = bool(reject_ends)
    return _create(
        execution=execution, values=values, payload=payload, step_path=step_path, source=source
    )


def _create(
    *, execution: Execution, values: dict[str, Any], payload: Any, step_path: str, source: str
) -> Approval:
    now = timezone.now()
    usernames = values.pop("assignee_usernames")
    expires_in = values.pop("expires_in")
    escalate_after = values.pop("escalate_after")
    approval = Approval.objects.create(
        workspace_id=execution.workspace_id,
        execution=execution,
        step_path=step_path,
        source=source,
        payload=payload,
        expires_at=policies.expiry_from(now, expires_in),
        escalate_at=policies.expiry_from(now, escalate_after),
        created_at=now,
        updated_at=now,
        **values,
    )
    if usernames:
        approval.assignee_users.set(get_user_model().objects.filter(username__in=usernames))
    approval_lifecycle.publish(approval)
    return approval
