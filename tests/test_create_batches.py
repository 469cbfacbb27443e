"""The loop's creates written in batches (executions/api/loopcreate.py StartBatches,
services/loopstarts.py): creates arriving while a statement runs go together in the next one,
each answered as alone (its own 201, row and `init` entry), a stale agent's create in a batch
goes the full way without stopping the others, and a statement the server refuses writes
nothing and hands every create of its batch to the full path. PostgreSQL only."""

from __future__ import annotations

import asyncio
import json

import pytest

from executions import services
from executions.models import Execution, Transition
from executions.services import loopstarts
from tests.executions.test_api_loopcreate import _one, external, handlers, key_of, pg, post

__all__ = ["external", "pg"]  # fixtures


@pytest.fixture
def batches(monkeypatch):
    """The size of each statement the loop writes."""
    sizes = []
    write = loopstarts.loop_starts_insert

    async def counted(conn, db, starts):
        sizes.append(len(starts))
        return await write(conn, db, starts)

    monkeypatch.setattr("executions.api.loopcreate.loop_starts_insert", counted)
    return sizes


def test_creates_at_once_go_in_few_statements_each_answered_as_alone(pg, owner, external, batches):
    fast, _ = handlers()
    fast.creates.batches.statements = 1
    path = f"/api/v1/agents/{external.pk}/execute"
    post(fast, path, {"input": {}}, key_of(owner))  # the lanes, which fill the cache
    replies = post(fast, path, {"input": {"n": 1}}, key_of(owner), times=10)
    assert [r[0] for r in replies] == [201] * 10
    assert fast.creates.served["api:agent_execute"] == 10
    assert len(batches) < 10 and sum(batches) == 10  # the first alone, the rest together
    ids = {json.loads(r[2])["data"]["id"] for r in replies}
    assert len(ids) == 10
    for execution in Execution.objects.filter(pk__in=ids):
        [step] = Transition.objects.filter(execution=execution)
        assert (step.type, step.seq, execution.transition_count) == ("init", 1, 1)


def test_a_stale_agent_in_a_batch_goes_the_full_way_alone(pg, owner, external, batches):
    fast, _ = handlers()
    fast.creates.batches.statements = 1
    other = services.agent_create(workspace=owner.workspace, name="other", type="external")
    paths = [f"/api/v1/agents/{a.pk}/execute" for a in (external, other)]
    for path in paths:
        post(fast, path, {"input": {}}, key_of(owner))
    Execution.objects.filter(agent=other).delete()
    services.agent_delete(agent=other)  # the cache still holds it

    async def both():
        try:
            headers = [("content-type", "application/json"), *key_of(owner)]
            calls = [_one(fast, paths[i % 2], b'{"input": {}}', headers) for i in range(6)]
            return await asyncio.gather(*calls)
        finally:
            await fast.aclose()

    replies = asyncio.run(both())
    assert [r[0] for r in replies] == [201, 404] * 3
    assert max(batches) > 1  # they did share statements
    assert Execution.objects.filter(agent=external).count() == 4


def test_a_refused_statement_hands_its_whole_batch_to_the_full_path(
    pg, owner, external, monkeypatch
):
    fast, _ = handlers()
    path = f"/api/v1/agents/{external.pk}/execute"
    post(fast, path, {"input": {}}, key_of(owner))

    async def refused(conn, db, starts):
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT 1/0")  # the server refuses: nothing written
        raise AssertionError("unreachable")

    monkeypatch.setattr("executions.api.loopcreate.loop_starts_insert", refused)
    before = fast.creates.served["api:agent_execute"]
    replies = post(fast, path, {"input": {"n": 2}}, key_of(owner), times=4)
    assert [r[0] for r in replies] == [201] * 4  # each answered by the full path
    assert fast.creates.served["api:agent_execute"] == before
    assert Execution.objects.filter(agent=external).count() == 5
