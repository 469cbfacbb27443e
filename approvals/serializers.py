"""JSON shapes of approvals."""

from __future__ import annotations

from typing import Any

from approvals.models import Approval
from executions.serializers import iso


def approval_out(approval: Approval) -> dict[str, Any]:
    approvals_given = sum(1 for d in approval.decisions.all() if d.decision in {"approve", "edit"})
    return {
        "id": str(approval.pk),
        "execution_id": str(approval.execution_id) if approval.execution_id else None,
        "agent_id": str(approval.execution.agent_id) if approval.execution_id else None,
        "step_path": approval.step_path,
        "source": approval.source,
        "title": approval.title,
        "description": approval.description,
        "payload": approval.payload,
        "payload_schema": approval.payload_schema,
        "allowed_actions": approval.allowed_actions,
        "options": approval.options,
        "multiple": approval.multiple,
        "response_schema": approval.response_schema,
        "assignees": {
            "users": [u.get_username() for u in approval.assignee_users.all()],
            "roles": approval.assignee_roles,
        },
        "required_approvals": approval.required_approvals,
        "progress": {"approvals": approvals_given, "required": approval.required_approvals},
        "status": approval.status,
        "result_payload": approval.result_payload,
        "response": approval.response,
        "chosen_options": approval.chosen_options,
        "expires_at": iso(approval.expires_at),
        "on_timeout": approval.on_timeout,
        "decided_at": iso(approval.decided_at),
        "decided_by": approval.decided_by_label or None,
        "created_at": iso(approval.created_at),
    }
