"""The real `promptrails` 0.9.2 SDK against a live Steward at /api/v1 (seed 002's flows)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from promptrails import (
    AsyncPromptRails,
    ContentEvent,
    DoneEvent,
    ExecutionEvent,
    ForbiddenError,
    NotFoundError,
    PromptRails,
    ServerError,
    UnauthorizedError,
    ValidationError,
)

from executions.demo import demo_seed
from tests.compat.conftest import ASKS, DOUBLER, GATED, NUMBER_SCHEMA, make_agent, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

FINISHED = {"completed", "failed", "cancelled", "rejected"}


class WorkflowConfig:
    """What `create_version(config=…)` needs: an object with to_dict(). Ours is Julep's task
    format (`main` and named sub-workflows) plus the `type` PromptRails' own configs carry."""

    def __init__(self, main: list, **workflows: Any) -> None:
        self.main = main
        self.workflows = workflows

    def to_dict(self) -> dict[str, Any]:
        return {"type": "workflow", "main": self.main, **self.workflows}


@pytest.fixture
def client(asgi_server, owner) -> PromptRails:
    return PromptRails(api_key=owner.key, base_url=asgi_server.url)


@pytest.fixture
def strict(asgi_server, owner) -> PromptRails:
    """No retries: the SDK treats 409/422 as retryable server errors, which only slows tests."""
    return PromptRails(api_key=owner.key, base_url=asgi_server.url, max_retries=0)


@pytest.fixture
def doubler(owner):
    return make_agent(owner.workspace, "doubler", DOUBLER, schema=NUMBER_SCHEMA)


def run_to_end(client: PromptRails, execution_id: str, *, until=FINISHED):
    return wait_until(
        lambda: (e := client.executions.get(execution_id)).status in until and e,
        what=f"execution {execution_id} to reach {sorted(until)}",
    )


def test_agents_are_created_versioned_promoted_updated_and_deleted(client, strict):
    agent = client.agents.create(name="numbers", type="workflow", description="does sums")
    assert agent.type == "workflow" and agent.status == "draft"
    assert agent.current_version is None

    first = client.agents.create_version(
        agent.id,
        version="1.0",
        config=WorkflowConfig(DOUBLER["main"]),
        input_schema=NUMBER_SCHEMA,
        message="doubles",
    )
    assert first.version == "1.0" and first.is_current, "the first version becomes current"
    assert first.config["main"] == DOUBLER["main"]
    assert first.input_schema == NUMBER_SCHEMA
    tripler = [{"return": {"n": "$ inputs['n'] * 3"}}]
    second = client.agents.create_version(
        agent.id, version="2.0", config=WorkflowConfig(tripler), input_schema=NUMBER_SCHEMA
    )
    assert not second.is_current

    versions = client.agents.list_versions(agent.id)
    assert [(v.version, v.is_current) for v in versions] == [("2.0", False), ("1.0", True)]
    client.agents.promote_version(agent.id, second.id)
    fetched = client.agents.get(agent.id)
    assert fetched.current_version.id == second.id and fetched.status == "active"
    assert client.agents.execute(agent.id, input={"n": 2}, sync=True).output == {"n": 6}

    updated = client.agents.update(agent.id, description="triples")
    assert updated.description == "triples"
    listed = client.agents.list(type="workflow", name="numb")
    assert [a.id for a in listed.data] == [agent.id] and listed.meta.total == 1
    assert client.agents.list(type="agent", name="numb").data == []

    with pytest.raises(ServerError) as bad:
        strict.agents.create_version(
            agent.id, version="3.0", config=WorkflowConfig([{"frobnicate": 1}])
        )
    assert bad.value.status_code == 422 and "config.main[0]" in bad.value.message
    with pytest.raises(ServerError) as taken:
        strict.agents.create(name="numbers", type="workflow")
    assert taken.value.status_code == 409

    client.agents.delete(agent.id)
    with pytest.raises(NotFoundError):
        client.agents.get(agent.id)


def test_sync_execute_returns_the_finished_result(client, doubler):
    result = client.agents.execute(str(doubler.pk), input={"n": 21}, sync=True)
    assert result.status == "completed"
    assert result.output == {"n": 42}
    assert result.execution_id and result.duration_ms is not None
    assert result.token_usage["total_tokens"] == 0


def test_async_execute_returns_at_once_and_finishes_later(client, doubler):
    started = client.agents.execute(str(doubler.pk), input={"n": 5}, sync=False)
    assert started.status in {"pending", "running", "completed"}
    done = run_to_end(client, started.execution_id)
    assert done.status == "completed" and done.output == {"n": 10}
    assert done.agent_id == str(doubler.pk) and done.agent_version_id
    assert done.started_at and done.completed_at and done.duration_ms is not None


def test_executions_list_filters_by_agent_status_and_session(client, owner, doubler):
    asks = make_agent(owner.workspace, "asks", ASKS)
    finished = [
        client.agents.execute(str(doubler.pk), input={"n": n}, session_id="s-1", sync=True)
        for n in range(2)
    ]
    waiting = client.agents.execute(str(asks.pk), input={}, sync=False)
    run_to_end(client, waiting.execution_id, until={"awaiting_input"})

    everything = client.executions.list()
    assert everything.meta.total == 3 and everything.meta.page == 1
    by_agent = client.executions.list(agent_id=str(doubler.pk))
    assert sorted(e.id for e in by_agent.data) == sorted(r.execution_id for r in finished)
    assert [e.id for e in client.executions.list(status="awaiting_input").data] == [
        waiting.execution_id
    ]
    assert len(client.executions.list(status="completed").data) == 2
    assert {e.session_id for e in client.executions.list(session_id="s-1").data} == {"s-1"}
    paged = client.executions.list(page=2, limit=2)
    assert len(paged.data) == 1 and paged.meta.pages == 2


def test_tree_shows_child_runs_and_cancel_stops_a_waiting_run(client, strict, owner):
    parent = make_agent(
        owner.workspace,
        "parent",
        {
            "main": [{"workflow": "shout", "arguments": {"v": "$ inputs['n']"}}],
            "shout": [{"return": {"loud": "$ inputs['v'] * 10"}}],
        },
    )
    result = client.agents.execute(str(parent.pk), input={"n": 4}, sync=True)
    tree = client.executions.tree(result.execution_id)
    assert tree.id == result.execution_id and tree.status == "completed"
    assert len(tree.children) == 1
    assert tree.children[0].parent_execution_id == result.execution_id

    asks = make_agent(owner.workspace, "asks", ASKS)
    waiting = client.agents.execute(str(asks.pk), input={}, sync=False)
    run_to_end(client, waiting.execution_id, until={"awaiting_input"})
    cancelled = client.executions.cancel(waiting.execution_id)
    assert cancelled.status == "cancelled" and cancelled.completed_at
    with pytest.raises(ServerError) as again:
        strict.executions.cancel(waiting.execution_id)
    assert again.value.status_code == 409 and "cancelled" in again.value.message


def test_errors_arrive_as_the_sdks_exceptions(asgi_server, client, viewer, outsider, doubler):
    with pytest.raises(NotFoundError):
        client.executions.get(str(uuid.uuid4()))
    with pytest.raises(NotFoundError):
        PromptRails(api_key=outsider.key, base_url=asgi_server.url).agents.get(str(doubler.pk))
    with pytest.raises(ForbiddenError):
        PromptRails(api_key=viewer.key, base_url=asgi_server.url).agents.execute(
            str(doubler.pk), input={"n": 1}
        )
    with pytest.raises(UnauthorizedError):
        PromptRails(api_key="stw_no_such", base_url=asgi_server.url).agents.list()
    with pytest.raises((ValidationError, ServerError)) as bad:
        PromptRails(api_key=viewer.key, base_url=asgi_server.url, max_retries=0).agents.list(
            limit=100000
        )
    assert bad.value.status_code in {400, 422}


async def test_the_async_client_does_the_same(asgi_server, owner, doubler):
    async with AsyncPromptRails(api_key=owner.key, base_url=asgi_server.url) as client:
        agents = await client.agents.list()
        assert [a.name for a in agents.data] == ["doubler"]
        result = await client.agents.execute(str(doubler.pk), input={"n": 7}, sync=True)
        assert result.status == "completed"
        fetched = await client.executions.get(result.execution_id)
        assert fetched.output == result.output
        listed = await client.executions.list(agent_id=str(doubler.pk), status="completed")
        assert [e.id for e in listed.data] == [result.execution_id]


def test_stream_yields_content_then_done_for_the_demo_research_assistant(client, owner):
    agents = demo_seed(workspace=owner.workspace)
    started = client.agents.execute(
        str(agents["research-assistant"].pk), input={"question": "What is 17 * 23?"}
    )
    events = list(client.executions.stream(started.execution_id))  # closes after done
    assert isinstance(events[0], ExecutionEvent)
    assert events[0].execution_id == started.execution_id
    assert isinstance(events[-1], DoneEvent)
    text = "".join(e.content for e in events if isinstance(e, ContentEvent))
    assert "391" in text, "the calculator's result reaches the streamed answer"
    assert {e.type for e in events} >= {"execution", "tool_start", "tool_end", "content", "done"}
    assert events[-1].token_usage.total_tokens > 0

    # A late subscriber gets the replay, ending with the same done frame.
    replay = list(client.executions.stream(started.execution_id))
    assert [e.type for e in replay] == [e.type for e in events]


async def test_the_async_stream_yields_the_same_events(asgi_server, owner):
    # sync_to_async, not asyncio.to_thread: the loop's executor thread would end still holding
    # its connection (conftest's _close_database_pools closes the shared sync thread's).
    agents = await sync_to_async(demo_seed)(workspace=owner.workspace)
    async with AsyncPromptRails(api_key=owner.key, base_url=asgi_server.url) as client:
        started = await client.agents.execute(
            str(agents["research-assistant"].pk), input={"question": "Order A-1001?"}
        )
        events = [e async for e in client.executions.stream(started.execution_id)]
    assert isinstance(events[-1], DoneEvent)
    assert any(isinstance(e, ContentEvent) for e in events)


def test_approval_inbox_approve_and_deny(asgi_server, client, owner, teammate):
    gated = make_agent(owner.workspace, "gated", GATED)
    first = client.agents.execute(str(gated.pk), input={"n": 1}, sync=False)
    second = client.agents.execute(str(gated.pk), input={"n": 2}, sync=False)
    for started in (first, second):
        run_to_end(client, started.execution_id, until={"awaiting_approval"})

    reviewer = PromptRails(api_key=teammate.key, base_url=asgi_server.url)
    inbox = reviewer.executions.approval_inbox()
    assert sorted(e.id for e in inbox.data) == sorted([first.execution_id, second.execution_id])
    assert inbox.meta.total == 2
    assert all(e.status == "awaiting_approval" for e in inbox.data)

    approved = reviewer.executions.approve(first.execution_id, reason="looks right")
    assert approved.id == first.execution_id
    done = run_to_end(client, first.execution_id)
    assert done.status == "completed" and done.output == {"shipped": 1}

    denied = reviewer.executions.deny(second.execution_id, reason="not today")
    assert denied.id == second.execution_id
    rejected = run_to_end(client, second.execution_id)
    assert rejected.status == "rejected"
    assert reviewer.executions.approval_inbox().data == []
