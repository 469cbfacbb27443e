"""approvals.lifecycle is the one writer of Approval.status: an execution that ends closes its
open approvals through it, and every open inbox hears about it."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from approvals.models import Approval
from executions import lifecycle, services
from executions.lifecycle import Actor
from tests.executions.dashboard_helpers import park, start
from tests.executions.test_consumers import connect, receive_all

pytestmark = [pytest.mark.django_db(transaction=True)]


async def test_cancelling_a_run_closes_its_approval_in_every_open_inbox(agent, viewer, owner):
    execution = await database_sync_to_async(start)(agent)
    approval = await database_sync_to_async(park)(execution)
    communicator, connected, _ = await connect(
        viewer, page="approvals", ws=agent.workspace_id, tab="all"
    )
    assert connected

    def cancel():
        services.execution_cancel(execution=execution, actor=Actor.for_user(owner.user))

    await database_sync_to_async(cancel)()
    html = await receive_all(communicator)
    assert f'id="approval-item-{approval.pk}"' in html
    assert 'class="inbox-item resolved"' in html
    assert 'data-count="0"' in html
    await communicator.disconnect()
    closed = await database_sync_to_async(Approval.objects.get)(pk=approval.pk)
    assert closed.status == "cancelled"


def test_a_run_failing_while_parked_closes_its_approval(agent):
    execution = start(agent)
    approval = park(execution)
    lifecycle.transition(execution, "failed", type="error", message="budget spent")
    approval.refresh_from_db()
    assert approval.status == "cancelled"
