"""The pub/sub layer's fan-out (executions.live.layer.LoopLayer): with a real Redis, a group
message reaches every live socket of the process once, through the fan-out rather than one queue
entry per socket, each change is loaded and rendered once, and every socket still handles its
messages in order (the execution page shows each timeline entry once, in seq order)."""

from __future__ import annotations

import re
import socket

import pytest
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from executions import lifecycle
from executions.live import fanout
from tests.executions.dashboard_helpers import start
from tests.executions.test_consumers import connect, receive_all

pytestmark = [pytest.mark.django_db(transaction=True)]

REDIS = ("127.0.0.1", 6379)


@pytest.fixture
def pubsub(settings):
    try:
        socket.create_connection(REDIS, timeout=0.5).close()
    except OSError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "executions.live.layer.PubSubLayer",
            # LIVE's Redis database; a prefix of its own so nothing else's messages arrive.
            "CONFIG": {"hosts": [f"redis://{REDIS[0]}:{REDIS[1]}/4"], "prefix": "fanout-test"},
        }
    }
    fanout.shared.clear()
    yield
    fanout.shared.clear()


async def test_every_socket_gets_each_change_once_in_order_with_one_render(
    pubsub, agent, viewer, teammate
):
    execution = await database_sync_to_async(start)(agent)
    lists, details = [], []
    for member in (viewer, teammate, viewer):
        communicator, connected, _ = await connect(
            member, page="executions", ws=agent.workspace_id, insert="1"
        )
        assert connected
        lists.append(communicator)
    for member in (viewer, viewer):
        communicator, connected, _ = await connect(
            member, page="execution", ws=agent.workspace_id, id=execution.pk, after_seq="1"
        )
        assert connected
        details.append(communicator)
    layer = get_channel_layer()._get_layer()
    # Registered with the fan-out once their socket is open (the group loop has started).
    for communicator in (*lists, *details):
        await receive_all(communicator, timeout=0.3)
    assert len(layer.fast) == 5

    before = fanout.shared.made
    moves = [("running", "start"), ("awaiting_input", "wait"), ("running", "input"),
             ("completed", "finish")]  # fmt: skip
    for status, kind in moves:
        await database_sync_to_async(lifecycle.transition)(execution, status, type=kind)
    got_lists = [await receive_all(c) for c in lists]
    got_details = [await receive_all(c) for c in details]

    for html in got_lists:
        assert html.count(f'<tr id="exec-{execution.pk}"') == len(moves)
    for html in got_details:
        seqs = [int(s) for s in re.findall(r'<li id="tr-(\d+)" data-seq=', html)]
        assert seqs == [2, 3, 4, 5]
    # One row render per change for the three list sockets, one detail render per change and
    # viewer for the detail sockets (both detail sockets are the same viewer).
    assert fanout.shared.made - before == 2 * len(moves)
    for communicator in (*lists, *details):
        await communicator.disconnect()
    assert layer.fast == {}
