"""The demo agents show what a failure looks like, and their approvals do not pile up."""

from __future__ import annotations

import pytest

from executions import services
from executions.demo import demo_seed
from tests.approvals.conftest import run_to_stop

pytestmark = pytest.mark.django_db


def test_a_refund_its_tool_refuses_ends_failed_through_an_error_step(owner):
    agents = demo_seed(workspace=owner.workspace, user=owner.user)
    # Order A-1002 totals 89.90: a refund of 95 (under the approval threshold) is refused.
    execution, _ = services.execution_start(
        workspace=owner.workspace,
        agent=agents["refund-desk"],
        input={"order_id": "A-1002", "amount": 95},
    )
    execution = run_to_stop(execution)
    assert execution.status == "failed"
    assert "exceeds what is left on order A-1002" in execution.error
    assert (
        execution.transitions.filter(step_kind="error").exists()
        or execution.transitions.filter(type="error").exists()
    )


def test_a_refund_within_the_order_still_completes(owner):
    agents = demo_seed(workspace=owner.workspace, user=owner.user)
    execution, _ = services.execution_start(
        workspace=owner.workspace,
        agent=agents["refund-desk"],
        input={"order_id": "A-1001", "amount": 40},
    )
    assert run_to_stop(execution).status == "completed"


def test_demo_refund_approvals_time_out_within_minutes(owner):
    agents = demo_seed(workspace=owner.workspace, user=owner.user)
    execution, _ = services.execution_start(
        workspace=owner.workspace,
        agent=agents["refund-desk"],
        input={"order_id": "A-1001", "amount": 250},
    )
    execution = run_to_stop(execution)
    approval = execution.approvals.get()
    assert (approval.expires_at - approval.created_at).total_seconds() <= 15 * 60
