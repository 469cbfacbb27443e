"""Expiry and escalation: checkpoints resolve themselves on time, decided by the system, and
escalations add assignees and tell them."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from approvals import services
from approvals.models import Approval
from executions import services as execution_services
from executions.lifecycle import Status
from executions.models import Execution
from tests.approvals.conftest import (
    WorkerThread,
    approval_workflow,
    run_queued,
    run_to_stop,
    wait_for,
)
from tests.conftest import make_member


def parked(owner, **spec) -> tuple[Execution, Approval]:
    agent = approval_workflow(owner.workspace, **spec)
    execution, _ = execution_services.execution_start(
        workspace=owner.workspace, agent=agent, input={"amount": 42}
    )
    execution = run_to_stop(execution)
    assert execution.status == Status.AWAITING_APPROVAL
    return execution, Approval.objects.get(execution=execution)


@pytest.mark.django_db(transaction=True)
def test_a_2s_timeout_with_on_timeout_reject_rejects_itself_within_seconds(owner, settings):
    settings.REAPER_INTERVAL_SECONDS = 0.5
    agent = approval_workflow(owner.workspace, timeout_seconds=2, on_timeout="reject")
    with WorkerThread(concurrency=2):
        execution, _ = execution_services.execution_start(
            workspace=owner.workspace, agent=agent, input={"amount": 7}
        )
        assert wait_for(
            lambda: Execution.objects.get(pk=execution.pk).status == Status.AWAITING_APPROVAL
        )
        parked_at = time.monotonic()
        assert wait_for(
            lambda: Execution.objects.get(pk=execution.pk).status == Status.REJECTED, timeout=8
        )
        waited = time.monotonic() - parked_at
    assert 1.5 < waited < 4.5
    approval = Approval.objects.get(execution=execution)
    assert approval.status == "expired"
    assert approval.decided_by_label == "system"
    (decision,) = approval.decisions.all()
    assert decision.decision == "expire"
    assert decision.actor_type == "system"
    steps = list(execution.transitions.order_by("seq").values_list("type", "actor_label"))
    assert steps[-2:] == [("expired", "system"), ("rejected", "system")]


def test_on_timeout_approve_continues_with_the_proposed_payload(owner):
    execution, approval = parked(owner, timeout_seconds=60, on_timeout="approve")
    assert services.approvals_expire_due() == 0
    assert services.approvals_expire_due(now=timezone.now() + timedelta(seconds=61)) == 1
    approval.refresh_from_db()
    assert approval.status == "approved"
    execution = run_to_stop(execution)
    assert execution.status == Status.COMPLETED
    assert execution.output == {"approved": {"amount": 42}}


def test_on_timeout_fail_fails_the_execution_with_a_readable_error(owner):
    execution, approval = parked(owner, timeout_seconds=60, on_timeout="fail")
    services.approvals_expire_due(now=timezone.now() + timedelta(minutes=5))
    execution.refresh_from_db()
    assert execution.status == Status.FAILED
    assert "expired without a decision" in execution.error


def test_a_decision_after_expiry_is_a_conflict_that_says_so(owner, teammate):
    execution, approval = parked(owner, timeout_seconds=60)
    services.approvals_expire_due(now=timezone.now() + timedelta(minutes=5))
    late = teammate.post(f"/api/v1/approvals/{approval.pk}/decide", {"decision": "approve"})
    assert late.status_code == 409
    assert late.json()["error"].startswith("approval was already expired by system at ")


def test_expiring_twice_resolves_once(owner):
    execution, approval = parked(owner, timeout_seconds=60)
    later = timezone.now() + timedelta(minutes=5)
    assert services.approvals_expire_due(now=later) == 1
    assert services.approvals_expire_due(now=later) == 0
    assert execution.transitions.filter(type="expired").count() == 1


def test_escalation_adds_the_assignees_and_emails_them(
    owner, teammate, workspace, mailoutbox, django_capture_on_commit_callbacks
):
    User = get_user_model()
    User.objects.filter(pk=teammate.user.pk).update(email="rory@example.com")
    boss = make_member(workspace, "bea", "admin")
    User.objects.filter(pk=boss.user.pk).update(email="bea@example.com")
    execution, approval = parked(
        owner,
        assignees=["rory"],
        escalate_after_seconds=30,
        escalate_to_users=["bea"],
    )
    assert services.approvals_escalate_due() == 0
    with django_capture_on_commit_callbacks(execute=True):
        assert services.approvals_escalate_due(now=timezone.now() + timedelta(seconds=31)) == 1
    assert services.approvals_escalate_due(now=timezone.now() + timedelta(seconds=31)) == 0
    approval.refresh_from_db()
    assert sorted(u.username for u in approval.assignee_users.all()) == ["bea", "rory"]
    assert approval.escalated_at is not None
    escalation = execution.transitions.get(type="escalation")
    assert "bea" in escalation.message

    assert run_queued("webhooks") == 1
    (message,) = mailoutbox
    assert message.to == ["bea@example.com"]
    assert "escalated to you" in message.subject
    assert f"/approvals/{approval.pk}" in message.body
    assert (
        boss.post(f"/api/v1/approvals/{approval.pk}/decide", {"decision": "approve"}).json()[
            "data"
        ]["status"]
        == "approved"
    )


def test_assignees_get_an_email_with_a_deep_link_when_it_parks(
    owner, teammate, mailoutbox, settings, django_capture_on_commit_callbacks
):
    settings.PUBLIC_URL = "https://steward.example.com/"
    get_user_model().objects.filter(pk=teammate.user.pk).update(email="rory@example.com")
    agent = approval_workflow(owner.workspace, assignees=["rory"], title="Ship v2?")
    execution, _ = execution_services.execution_start(
        workspace=owner.workspace, agent=agent, input={}
    )
    with django_capture_on_commit_callbacks(execute=True):
        execution = run_to_stop(execution)
    approval = Approval.objects.get(execution=execution)
    assert approval.notified_at is not None
    assert run_queued("webhooks") >= 1
    (message,) = mailoutbox
    assert message.to == ["rory@example.com"]
    assert message.subject == "[Steward] Approval needs your decision: Ship v2?"
    assert f"https://steward.example.com/approvals/{approval.pk}" in message.body
    html = message.alternatives[0][0]
    assert f'href="https://steward.example.com/approvals/{approval.pk}"' in html
