"""A cancel and a decision on the same execution at once: one wins and the other gets its 409
(or goes through), and neither deadlocks. PostgreSQL aborted one of them with a 500 when a
decision locked the approval before the execution and an ending transition took them the other
way round (approvals.lifecycle.lock_execution; found by schemathesis's seeded pass)."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from django.db import connection

from approvals import services as approval_services
from approvals.models import Approval, ApprovalStatus
from executions import services
from executions.errors import Conflict
from executions.lifecycle import Actor, IllegalTransition, Status
from executions.models import Execution
from tests.approvals.test_external import ask

pytestmark = pytest.mark.django_db(transaction=True)

ROUNDS = 12


def at_once(calls: list[Callable[[], object]]) -> list[BaseException]:
    """Run the calls on threads released together; the errors other than a lost race."""
    gate, failures = threading.Barrier(len(calls)), []

    def run(call: Callable[[], object]) -> None:
        try:
            gate.wait(5)
            call()
        except (IllegalTransition, Conflict):
            pass  # the other one won: the API answers 409
        except BaseException as exc:  # noqa: BLE001 - a deadlock is what this test looks for
            failures.append(exc)
        finally:
            connection.close()  # this thread's own

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return failures


def test_cancel_and_approve_at_once_never_deadlock(owner):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite serialises writers: there are no row locks to take in two orders")
    agent = services.agent_create(workspace=owner.workspace, name="outside", type="external")
    actor = Actor.for_user(owner.user)
    for _ in range(ROUNDS):
        execution, _ = services.execution_start(workspace=owner.workspace, agent=agent, input={})
        assert ask(owner, execution, title="Refund?").status_code == 201
        approval = Approval.objects.get(execution=execution)
        failures = at_once(
            [
                lambda pk=execution.pk: services.execution_cancel(
                    execution=Execution.objects.get(pk=pk), actor=actor
                ),
                lambda pk=approval.pk: approval_services.approval_decide(
                    approval=Approval.objects.get(pk=pk),
                    actor=actor,
                    decision="approve",
                    role="admin",
                ),
            ]
        )
        assert not failures, failures
        execution.refresh_from_db()
        approval.refresh_from_db()
        # Whichever won, the two rows agree.
        if execution.status == Status.CANCELLED:
            assert approval.status in (ApprovalStatus.CANCELLED, ApprovalStatus.APPROVED)
        else:
            assert approval.status == ApprovalStatus.APPROVED
