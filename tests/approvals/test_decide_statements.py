"""The statements of one decision, pinned (a re-read or an N+1 creeping back fails here), and
the shortcuts that save them kept honest: assignees added by an escalation after the page read
the approval still count, and a quorum still sees the votes cast meanwhile."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import notifications, services
from approvals import selectors as approval_selectors
from approvals.models import Approval, ApprovalStatus
from approvals.services.timers import approvals_escalate_due
from executions.errors import Conflict
from executions.lifecycle import Actor
from tests.executions.dashboard_helpers import REFUND_SPEC, browser, park, start

pytestmark = pytest.mark.django_db(transaction=True)

# Session, user and membership (middleware); the approval with its assignees (404, the
# options the form checks; votes are read under the lock when a quorum needs them); then the
# transaction: BEGIN, the execution's row lock (before the approval's, in the order an ending
# transition takes them: approvals.lifecycle.lock_execution), the approval's row lock, the
# vote, the "decision" transition (savepoint, execution update, transition insert, release),
# the approval's outcome, the "approved" transition (four again), COMMIT. No membership or
# workspace lookup, no re-read after the commit, no re-read for the reply.
DASHBOARD_DECIDE = 19
# API key (read, last used), the approval with its assignees, the key's creator (the
# person deciding), then the same transaction of 14 statements.
API_DECIDE = 19


def _sql(captured: CaptureQueriesContext) -> str:
    return "\n".join(f"{i}. {q['sql'][:200]}" for i, q in enumerate(captured.captured_queries, 1))


@pytest.fixture
def parked(agent):
    execution = start(agent)
    approval = park(execution)
    # The per-process "any webhooks?" answer, as a running server holds it.
    notifications.has_webhooks(approval.workspace_id)
    return execution, approval


def test_a_dashboard_decision_takes_a_fixed_number_of_statements(teammate, parked):
    execution, approval = parked
    page = browser(teammate)
    page.get("/")
    token = page.cookies["csrftoken"].value
    with CaptureQueriesContext(connection) as captured:
        response = page.post(
            f"/approvals/{approval.pk}/decide/",
            {"decision": "approve", "reason": "fine", "csrfmiddlewaretoken": token},
            HTTP_HX_REQUEST="true",
        )
    assert response.status_code == 200
    body = response.content.decode()
    assert "Approved" in body and "by rory" in body
    assert len(captured.captured_queries) == DASHBOARD_DECIDE, _sql(captured)
    approval.refresh_from_db()
    execution.refresh_from_db()
    assert approval.status == ApprovalStatus.APPROVED
    assert execution.status == "running"


def test_an_api_decision_takes_a_fixed_number_of_statements(teammate, parked):
    _, approval = parked
    with CaptureQueriesContext(connection) as captured:
        response = teammate.post(
            f"/api/v1/approvals/{approval.pk}/decide", {"decision": "approve", "reason": "ok"}
        )
    assert response.status_code == 200, response.json()
    data = response.json()["data"]
    assert data["status"] == "approved"
    assert data["decided_by"] == "key:rory"
    assert [d["decision"] for d in data["decisions"]] == ["approve"]
    assert data["decisions"][0]["actor"]["user"] == "rory"
    assert data["progress"]["approvals"] == 1 and data["progress"]["rejections"] == 0
    assert len(captured.captured_queries) == API_DECIDE, _sql(captured)


def test_an_escalation_after_the_page_read_still_lets_the_new_assignee_decide(
    owner, teammate, agent
):
    spec = {
        **REFUND_SPEC,
        "assignee_roles": [],
        "assignee_users": ["olivia"],
        "escalation": {"after": "1h", "users": ["rory"]},
    }
    approval = park(start(agent), spec=spec)
    seen = approval_selectors.approval_get(workspace=approval.workspace, approval_id=approval.pk)
    assert [u.username for u in seen.assignee_users.all()] == ["olivia"]
    assert approvals_escalate_due(now=timezone.now() + timedelta(hours=2)) == 1

    decided = services.approval_decide(
        approval=seen, actor=Actor.for_user(teammate.user), decision="approve", role="reviewer"
    )
    assert decided.approval.status == ApprovalStatus.APPROVED
    assert sorted(u.username for u in decided.approval.assignee_users.all()) == ["olivia", "rory"]


def test_a_quorum_counts_the_vote_cast_after_the_page_read(owner, teammate, agent):
    approval = park(start(agent), spec={**REFUND_SPEC, "required_approvals": 2})
    # Both read the approval with no votes; rory votes first, olivia's vote then completes it.
    rory_saw, olivia_saw = (
        approval_selectors.approval_get(workspace=approval.workspace, approval_id=approval.pk)
        for _ in range(2)
    )
    first = services.approval_decide(
        approval=rory_saw, actor=Actor.for_user(teammate.user), decision="approve", role="reviewer"
    )
    assert not first.resolved
    with pytest.raises(Conflict):
        services.approval_decide(
            approval=approval_selectors.approval_get(
                workspace=approval.workspace, approval_id=approval.pk
            ),
            actor=Actor.for_user(teammate.user),
            decision="approve",
            role="reviewer",
        )
    second = services.approval_decide(
        approval=olivia_saw, actor=Actor.for_user(owner.user), decision="approve", role="admin"
    )
    assert second.resolved
    assert [d.actor_label for d in second.approval.decisions.all()] == ["rory", "olivia"]
    assert Approval.objects.get(pk=approval.pk).status == ApprovalStatus.APPROVED
