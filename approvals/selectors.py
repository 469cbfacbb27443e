"""Reads of approvals, scoped by workspace here."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from approvals.models import Approval, ApprovalStatus
from executions.errors import NotFound, ValidationFailed, field_error
from executions.models import Workspace
from executions.selectors import parse_uuid


def approval_list(*, workspace: Workspace, status: str | None = None) -> QuerySet:
    approvals = Approval.objects.for_workspace(workspace).select_related("execution__agent")
    if status:
        if status not in ApprovalStatus.values:
            raise ValidationFailed(
                "unknown approval status",
                details=[field_error("status", f"one of {', '.join(ApprovalStatus.values)}")],
            )
        approvals = approvals.filter(status=status)
    return approvals.order_by("expires_at", "created_at")


def approval_get(*, workspace: Workspace, approval_id: Any) -> Approval:
    pk = parse_uuid(approval_id, field="approval_id", what="approval")
    approval = (
        Approval.objects.for_workspace(workspace)
        .select_related("execution__agent")
        .filter(pk=pk)
        .first()
    )
    if approval is None:
        raise NotFound(f"approval {approval_id} not found")
    return approval
