"""E-mail to the people who should decide an approval: a deep link, the proposal, the deadline."""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.tasks import task
from django.utils.html import escape

from approvals import policies
from approvals.markdown import render_markdown
from approvals.models import Approval

logger = logging.getLogger("steward.notifications")

# --- e-mail ------------------------------------------------------------------------------------


def _enqueue_mail(
    *, approval_id: Any, user_ids: list[Any] | None, reason: str, roles: list[str] | None = None
) -> None:
    try:
        send_approval_email.enqueue(
            str(approval_id),
            [str(u) for u in user_ids] if user_ids is not None else None,
            reason,
            roles,
        )
    except Exception:  # noqa: BLE001 - mail is best effort; the inbox and webhooks still show it
        logger.exception("could not enqueue approval e-mail for %s", approval_id)


def approval_link(approval: Any) -> str:
    return f"{str(settings.PUBLIC_URL).rstrip('/')}/approvals/{approval.pk}"


def approval_email_send(
    *,
    approval_id: Any,
    user_ids: list[Any] | None = None,
    reason: str = "created",
    roles: list[str] | None = None,
) -> int:
    """E-mail the assignees (or, on escalation, the people added) a deep link to the approval.
    Returns how many messages were sent. Approvals without assignees e-mail nobody: the inbox,
    the live dashboard and webhooks show them to every reviewer."""
    approval = Approval.objects.select_related("execution__agent").filter(pk=approval_id).first()
    if approval is None or approval.status != "pending":
        return 0
    if user_ids is None and not policies.assigned(approval):
        return 0
    users = policies.notify_users(approval, roles=roles, users=user_ids)
    recipients = sorted({u.email for u in users if getattr(u, "email", "")})
    if not recipients:
        return 0
    link = approval_link(approval)
    agent = approval.execution.agent.name if approval.execution_id else "an external program"
    lead = "was escalated to you" if reason == "escalated" else "needs your decision"
    subject = f"[Steward] Approval {lead}: {approval.title}"[:200]
    due = (
        f"\nDecide before {approval.expires_at:%Y-%m-%d %H:%M} UTC "
        f"(then it is resolved as: {approval.on_timeout})."
        if approval.expires_at
        else ""
    )
    payload = json.dumps(approval.payload, indent=2, default=str) if approval.payload else ""
    text = (
        f"“{approval.title}” from {agent} {lead}.\n\n{approval.description}\n\n"
        + (f"Proposed:\n{payload}\n\n" if payload else "")
        + f"Open it: {link}{due}\n"
    )
    html = (
        f"<p>“{_escape(approval.title)}” from {_escape(agent)} {lead}.</p>"
        f"{render_markdown(approval.description)}"
        + (f"<pre>{_escape(payload)}</pre>" if payload else "")
        + f'<p><a href="{_escape(link)}">Open the approval</a>{_escape(due)}</p>'
    )
    sent = 0
    for recipient in recipients:  # one message each: assignees do not see each other's address
        message = EmailMultiAlternatives(subject, text, None, [recipient])
        message.attach_alternative(html, "text/html")
        sent += message.send()
    return sent


def _escape(value: str) -> str:
    return str(escape(value))


@task(queue_name="webhooks")
def send_approval_email(
    approval_id: str,
    user_ids: list[str] | None = None,
    reason: str = "created",
    roles: list[str] | None = None,
) -> int:
    """The background task of one approval's e-mail (queue "webhooks")."""
    return approval_email_send(
        approval_id=approval_id, user_ids=user_ids, reason=reason, roles=roles
    )
