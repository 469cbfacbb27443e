"""Comments on an approval: kept with it and recorded on the execution's timeline."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from approvals import lifecycle as approval_lifecycle
from approvals import policies
from approvals.models import Approval, ApprovalComment
from executions import lifecycle
from executions.errors import ValidationFailed, field_error
from executions.lifecycle import Actor


def approval_comment_add(*, approval: Approval, actor: Actor, body: str) -> ApprovalComment:
    body = (body or "").strip()
    if not body:
        raise ValidationFailed("a comment needs a body", details=[field_error("body", "empty")])
    if len(body) > 10_000:
        raise ValidationFailed(
            "a comment is at most 10000 characters",
            details=[field_error("body", "at most 10000 characters")],
        )
    decider = policies.decider_for(actor, workspace=approval.workspace)
    with transaction.atomic():
        comment = ApprovalComment.objects.create(
            approval=approval,
            body=body,
            actor_type=actor.type,
            actor_user=decider.user,
            actor_key=actor.api_key,
            actor_label=actor.label,
        )
        if approval.execution_id:
            lifecycle.record(
                approval.execution,
                type="comment",
                actor=actor,
                step_path=approval.step_path,
                step_kind="approval",
                message=body,
                output={"approval_id": str(approval.pk), "comment_id": comment.pk},
                allow_terminal=True,
            )
        Approval.objects.filter(pk=approval.pk).update(updated_at=timezone.now())
        approval_lifecycle.publish(approval)
    return comment
