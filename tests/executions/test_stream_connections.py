"""A stream's database reads give their connection back: on PostgreSQL with the pool, the reads
of an SSE stream run on threads of their own, and a connection those threads kept would stay
checked out of the pool for as long as the thread lives (16 per process at most)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from executions.engine import runner

from .engine_helpers import start
from .test_engine_streams import read_stream, research_agent

pytestmark = pytest.mark.django_db(transaction=True)


def checked_out() -> int:
    stats = connection.pool.get_stats()
    return stats["pool_size"] - stats["pool_available"]


@pytest.mark.skipif(
    not connection.settings_dict.get("OPTIONS", {}).get("pool"), reason="PostgreSQL's pool only"
)
@pytest.mark.parametrize("path", ["stream", "status.stream"])
async def test_streaming_an_execution_leaves_no_connection_checked_out(owner, path):
    agent = await sync_to_async(research_agent)(owner.workspace)
    execution = await sync_to_async(start)(agent, {"question": "6*7?"})
    await sync_to_async(runner.run)(execution.pk)
    before = await sync_to_async(checked_out)()

    for _ in range(3):
        await read_stream(owner.key, f"/api/v1/executions/{execution.pk}/{path}")

    assert await sync_to_async(checked_out)() == before
