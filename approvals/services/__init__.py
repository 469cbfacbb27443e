"""Writes on approvals, one module per concern: requests, decisions (and their outcomes),
comments, timers. Status changes go through `approvals.lifecycle`. The package re-exports the
public functions, so callers write `services.approval_decide(...)`."""

from __future__ import annotations

from approvals.services.comments import (
    approval_comment_add,
)
from approvals.services.decisions import (
    BULK_LIMIT,
    DECISION_ALIASES,
    Decided,
    approval_bulk_decide,
    approval_decide,
    pending_approval_for,
)
from approvals.services.outcomes import (
    APPROVING,
)
from approvals.services.requests import (
    approval_create,
    approval_request,
)
from approvals.services.timers import (
    approvals_escalate_due,
    approvals_expire_due,
)

__all__ = [
    "APPROVING",
    "BULK_LIMIT",
    "DECISION_ALIASES",
    "Decided",
    "approval_bulk_decide",
    "approval_comment_add",
    "approval_create",
    "approval_decide",
    "approval_request",
    "approvals_escalate_due",
    "approvals_expire_due",
    "pending_approval_for",
]
