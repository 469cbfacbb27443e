"""The PromptRails SDK's approval calls (approval_inbox, approve, deny) against a live server."""

from __future__ import annotations

import pytest
from promptrails import PromptRails

from executions import services
from executions.lifecycle import Status
from executions.models import Execution
from tests.approvals.conftest import approval_workflow, run_to_stop


@pytest.fixture
def without_worker(settings):
    # The test runs executions itself, so the server's embedded worker stays off.
    settings.EMBEDDED_WORKER = False


@pytest.mark.django_db(transaction=True)
def test_the_sdk_lists_the_inbox_and_approves_and_denies(
    without_worker, asgi_server, owner, teammate
):
    agent = approval_workflow(owner.workspace, timeout_seconds=600)
    parked = []
    for amount in (1, 2):
        execution, _ = services.execution_start(
            workspace=owner.workspace, agent=agent, input={"amount": amount}
        )
        parked.append(run_to_stop(execution))

    client = PromptRails(api_key=teammate.key, base_url=asgi_server.url, max_retries=0)
    try:
        inbox = client.executions.approval_inbox(page=1, limit=10)
        assert inbox.meta.total == 2
        assert {e.id for e in inbox.data} == {str(e.pk) for e in parked}
        assert all(e.status == "awaiting_approval" and e.approval_expires_at for e in inbox.data)

        approved = client.executions.approve(str(parked[0].pk), reason="fine")
        assert approved.id == str(parked[0].pk)
        assert approved.status == "running"
        denied = client.executions.deny(str(parked[1].pk), reason="not today")
        assert denied.status == "rejected"
        assert "not today" in denied.error
        assert client.executions.approval_inbox().data == []
    finally:
        client.close()
    assert run_to_stop(Execution.objects.get(pk=parked[0].pk)).status == Status.COMPLETED
