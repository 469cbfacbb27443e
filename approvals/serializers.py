"""JSON shapes of approvals, decisions, comments and webhooks."""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from approvals.markdown import render_markdown
from approvals.models import (
    Approval,
    ApprovalComment,
    ApprovalDecision,
    DeliveryAttempt,
    Webhook,
    WebhookDelivery,
)
from executions.serializers import iso

APPROVING = {"approve", "edit", "respond"}


def _who(row: Any) -> dict[str, Any]:
    return {
        "type": row.actor_type,
        "label": row.actor_label,
        "user": row.actor_user.get_username() if row.actor_user_id and row.actor_user else None,
    }


def decision_out(decision: ApprovalDecision) -> dict[str, Any]:
    return {
        "id": decision.pk,
        "decision": decision.decision,
        "reason": decision.reason,
        "payload": decision.payload,
        "response": decision.response,
        "options": decision.options,
        "actor": _who(decision),
        "created_at": iso(decision.created_at),
    }


def comment_out(comment: ApprovalComment) -> dict[str, Any]:
    return {
        "id": comment.pk,
        "approval_id": str(comment.approval_id),
        "body": comment.body,
        "body_html": render_markdown(comment.body),
        "author": _who(comment),
        "created_at": iso(comment.created_at),
    }


def _identity(d: ApprovalDecision) -> str:
    if d.actor_user_id is not None:
        return f"user:{d.actor_user_id}"
    if d.actor_key_id is not None:
        return f"key:{d.actor_key_id}"
    return f"{d.actor_type}:{d.actor_label}"


def approval_out(
    approval: Approval, *, can_decide: bool | None = None, detail: bool = True
) -> dict[str, Any]:
    decisions = list(approval.decisions.all())
    approvers = {_identity(d) for d in decisions if d.decision in APPROVING}
    rejecters = {_identity(d) for d in decisions if d.decision == "reject"}
    now = timezone.now()
    overdue = bool(
        approval.status == "pending" and approval.expires_at and approval.expires_at <= now
    )
    data = {
        "id": str(approval.pk),
        "workspace_id": str(approval.workspace_id),
        "execution_id": str(approval.execution_id) if approval.execution_id else None,
        "agent_id": str(approval.execution.agent_id) if approval.execution_id else None,
        "agent_name": approval.execution.agent.name if approval.execution_id else None,
        "step_path": approval.step_path,
        "source": approval.source,
        "title": approval.title,
        "description": approval.description,
        "description_html": render_markdown(approval.description),
        "payload": approval.payload,
        "payload_schema": approval.payload_schema,
        "allowed_actions": approval.allowed_actions,
        "options": approval.options,
        "multiple": approval.multiple,
        "response_schema": approval.response_schema,
        "assignees": {
            "users": sorted(u.get_username() for u in approval.assignee_users.all()),
            "roles": approval.assignee_roles,
        },
        "forbid_self_approval": approval.forbid_self_approval,
        "required_approvals": approval.required_approvals,
        "required_rejections": approval.required_rejections,
        "reject_ends": approval.reject_ends,
        "progress": {
            "approvals": len(approvers),
            "required": approval.required_approvals,
            "rejections": len(rejecters),
            "required_rejections": approval.required_rejections,
            "text": f"{len(approvers)} of {approval.required_approvals}",
        },
        "status": approval.status,
        "result_payload": approval.result_payload,
        "response": approval.response,
        "chosen_options": approval.chosen_options,
        "expires_at": iso(approval.expires_at),
        "due_at": iso(approval.expires_at),
        "overdue": overdue,
        "on_timeout": approval.on_timeout,
        "escalate_at": iso(approval.escalate_at),
        "escalated_at": iso(approval.escalated_at),
        "decided_at": iso(approval.decided_at),
        "decided_by": approval.decided_by_label or None,
        "created_at": iso(approval.created_at),
        "updated_at": iso(approval.updated_at),
    }
    if can_decide is not None:
        data["can_decide"] = can_decide
    if detail:
        data["decisions"] = [decision_out(d) for d in decisions]
    return data


def webhook_out(webhook: Webhook, *, secret: bool = False) -> dict[str, Any]:
    data = {
        "id": str(webhook.pk),
        "url": webhook.url,
        "events": webhook.events,
        "active": webhook.active,
        "description": webhook.description,
        "secret_hint": f"{webhook.secret[:10]}…",
        "created_at": iso(webhook.created_at),
    }
    if secret:
        data["secret"] = webhook.secret
    return data


def attempt_out(attempt: DeliveryAttempt) -> dict[str, Any]:
    return {
        "status_code": attempt.status_code,
        "error": attempt.error,
        "duration_ms": attempt.duration_ms,
        "created_at": iso(attempt.created_at),
    }


def delivery_out(delivery: WebhookDelivery) -> dict[str, Any]:
    return {
        "id": str(delivery.pk),
        "webhook_id": str(delivery.webhook_id),
        "event": delivery.event,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "next_attempt_at": iso(delivery.next_attempt_at),
        "delivered_at": iso(delivery.delivered_at),
        "created_at": iso(delivery.created_at),
        "payload": delivery.payload,
        "log": [attempt_out(a) for a in delivery.log.all()],
    }
