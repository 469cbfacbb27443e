"""The real `julep` 2.21 SDK against a live Steward at /julep: seed 000 and 004's flows."""

from __future__ import annotations

import asyncio
import json
import uuid

import julep
import pytest
from julep import AsyncJulep, Julep

from executions.compat.julep_shapes import julep_status, transition_type
from executions.models import Execution, Transition
from tests.compat.conftest import ASKS, NUMBER_SCHEMA, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

TERMINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture
def client(asgi_server, owner) -> Julep:
    return Julep(api_key=owner.key, base_url=f"{asgi_server.url}/julep")


@pytest.fixture
def async_client(asgi_server, owner) -> AsyncJulep:
    return AsyncJulep(api_key=owner.key, base_url=f"{asgi_server.url}/julep")


def make_task(client: Julep, *, main=None, **extra):
    agent = client.agents.create(name=f"agent-{uuid.uuid4().hex[:6]}", about="helps")
    task = client.tasks.create(
        agent.id,
        name="double it",
        main=main or [{"evaluate": {"doubled": "$ inputs['n'] * 2"}}, {"return": {"n": "$ _"}}],
        input_schema=NUMBER_SCHEMA if main is None else None,
        **extra,
    )
    return agent, task


def poll_to_end(client: Julep, execution_id: str):
    """Seed 000's loop: get until succeeded / failed / cancelled."""
    return wait_until(
        lambda: (e := client.executions.get(execution_id)).status in TERMINAL and e,
        what=f"execution {execution_id} to finish",
    )


def test_agents_are_created_fetched_and_listed_with_offset_and_limit(client):
    made = [
        client.agents.create(
            name=f"helper-{i}",
            about=f"helper number {i}",
            model="gpt-4o-mini",
            instructions=["be brief", "be kind"],
            metadata={"team": "a" if i < 2 else "b"},
        )
        for i in range(3)
    ]
    got = client.agents.get(made[0].id)
    assert got.name == "helper-0" and got.about == "helper number 0"
    assert got.model == "gpt-4o-mini" and got.instructions == ["be brief", "be kind"]
    assert got.metadata == {"team": "a"}
    assert got.created_at is not None and got.updated_at is not None

    # Auto-pagination walks every page with offset/limit and stops on an empty one.
    names = [a.name for a in client.agents.list(limit=2)]
    assert sorted(names) == ["helper-0", "helper-1", "helper-2"]
    first_page = client.agents.list(limit=2, direction="asc")
    assert [a.name for a in first_page.items] == ["helper-0", "helper-1"]
    assert [a.name for a in client.agents.list(limit=2, offset=2, direction="asc").items] == [
        "helper-2"
    ]
    filtered = client.agents.list(metadata_filter={"team": "b"})
    assert [a.name for a in filtered.items] == ["helper-2"]

    with pytest.raises(julep.NotFoundError) as missing:
        client.agents.get(str(uuid.uuid4()))
    assert "not found" in missing.value.body["detail"]


def test_tasks_keep_their_steps_schema_tools_and_sub_workflows(client):
    agent = client.agents.create(name="writer", about="writes")
    main = [
        {"evaluate": {"x": "$ inputs['n'] + 1"}},
        {
            "if": "$ _['x'] > 2",
            "then": {"workflow": "shout", "arguments": {"v": "$ _['x']"}},
            "else": {"return": {"small": "$ _['x']"}},
        },
    ]
    tools = [{"name": "summarise", "type": "function", "function": {"name": "summarise"}}]
    task = client.tasks.create(
        agent.id,
        name="notes",
        description="takes notes",
        main=main,
        input_schema=NUMBER_SCHEMA,
        tools=tools,
        metadata={"owner": "ops"},
        shout=[{"return": {"loud": "$ inputs['v']"}}],
    )
    assert task.name == "notes" and task.description == "takes notes"
    assert [s.model_dump(by_alias=True, exclude_none=True) for s in task.main] == main
    fetched = client.tasks.get(task.id)
    assert fetched.id == task.id and fetched.input_schema == NUMBER_SCHEMA
    assert fetched.metadata == {"owner": "ops"}
    assert fetched.shout == [{"return": {"loud": "$ inputs['v']"}}]
    assert [t.name for t in fetched.tools] == ["summarise"]
    raw = client.tasks.with_raw_response.get(task.id).http_response.json()
    assert raw["main"] == main

    other = client.agents.create(name="reader", about="reads")
    assert [t.id for t in client.tasks.list(agent.id).items] == [task.id]
    assert client.tasks.list(other.id).items == []

    with pytest.raises(julep.UnprocessableEntityError) as bad:
        client.tasks.create(agent.id, name="bad", main=[{"frobnicate": 1}])
    assert bad.value.body["detail"][0]["loc"][:3] == ["body", "main", 0]


def test_an_execution_runs_to_succeeded_and_records_its_transitions(client):
    _, task = make_task(client)
    execution = client.executions.create(task.id, input={"n": 21}, metadata={"run": "one"})
    assert execution.task_id == task.id
    assert execution.status in {"queued", "starting", "running", "succeeded"}
    assert execution.metadata == {"run": "one"}

    done = poll_to_end(client, execution.id)
    assert done.status == "succeeded"
    assert done.output == {"n": {"doubled": 42}}
    assert done.error is None and done.transition_count >= 4
    assert client.executions.status.get(execution.id).status == "succeeded"

    steps = client.executions.transitions.list(execution.id, direction="asc").items
    types = [t.type for t in steps]
    assert types[0] == "init" and types[-1] == "finish"
    assert "step" in types
    assert steps[-1].output == {"n": {"doubled": 42}}
    assert steps[2].current.workflow == "main" and steps[2].current.step == 0
    newest_first = client.executions.transitions.list(execution.id).items
    assert newest_first[0].id == steps[-1].id
    one = client.executions.transitions.retrieve(steps[1].id, execution_id=execution.id)
    assert one.id == steps[1].id and one.execution_id == execution.id

    second = client.executions.create(task.id, input={"n": 1})
    poll_to_end(client, second.id)
    every = [e.id for e in client.executions.list(task.id, limit=1)]
    assert sorted(every) == sorted([execution.id, second.id])
    assert [e.id for e in client.executions.list(task.id, limit=1, offset=1).items] == [
        execution.id
    ]


def test_input_that_breaks_the_schema_is_refused(client):
    _, task = make_task(client)
    with pytest.raises(julep.UnprocessableEntityError) as bad:
        client.executions.create(task.id, input={"n": "many"})
    assert bad.value.body["detail"][0]["loc"] == ["body", "input", "n"]
    assert not Execution.objects.exists()


def test_change_status_running_resumes_a_waiting_execution_with_input(client):
    _, task = make_task(client, main=ASKS["main"])
    execution = client.executions.create(task.id, input={})
    wait_until(
        lambda: client.executions.get(execution.id).status == "awaiting_input",
        what="awaiting_input",
    )
    changed = client.executions.change_status(
        execution.id, status="running", input={"colour": "teal"}
    )
    assert changed["status"] in {"running", "succeeded"}
    done = poll_to_end(client, execution.id)
    assert done.status == "succeeded" and done.output == {"answer": "teal"}
    types = [t.type for t in client.executions.transitions.list(execution.id).items]
    assert "wait" in types and "resume" in types


def test_change_status_cancels_once_and_then_conflicts(client):
    _, task = make_task(client, main=ASKS["main"])
    execution = client.executions.create(task.id, input={})
    wait_until(
        lambda: client.executions.get(execution.id).status == "awaiting_input",
        what="awaiting_input",
    )
    cancelled = client.executions.change_status(execution.id, status="cancelled", reason="no")
    assert cancelled["status"] == "cancelled"
    assert client.executions.get(execution.id).status == "cancelled"
    with pytest.raises(julep.ConflictError) as again:
        client.executions.change_status(execution.id, status="cancelled")
    assert "cancelled" in again.value.body["detail"]
    assert again.value.response.headers["x-should-retry"] == "false"
    with pytest.raises(julep.BadRequestError):
        client.executions.change_status(execution.id, status="succeeded")
    types = [t.type for t in client.executions.transitions.list(execution.id).items]
    assert types[0] == "cancelled"


async def test_status_stream_follows_the_execution_until_it_ends(async_client, client):
    _, task = await asyncio.to_thread(make_task, client)
    execution = await async_client.executions.create(task.id, input={"n": 5})
    stream = await async_client.executions.status.stream(execution.id)
    seen = [event async for event in stream]  # the server closes after the terminal status
    assert seen, "at least one status event"
    assert seen[-1].status == "succeeded"
    assert seen[-1].execution_id == execution.id and seen[-1].output == {"n": {"doubled": 10}}
    assert {e.status for e in seen} <= {"queued", "starting", "running", "succeeded"}
    counts = [e.transition_count for e in seen]
    assert counts == sorted(counts)

    # Subscribing after the end gets the final status at once, then the stream closes.
    late = await async_client.executions.status.stream(execution.id)
    assert [e.status async for e in late] == ["succeeded"]


def test_transitions_stream_returns_every_transition_and_resumes_from_a_token(client):
    _, task = make_task(client)
    execution = client.executions.create(task.id, input={"n": 2})
    poll_to_end(client, execution.id)
    body = client.executions.transitions.stream(execution.id)
    events = [
        json.loads(line[len("data: ") :]) for line in body.splitlines() if line.startswith("data:")
    ]
    assert [e["transition"]["type"] for e in events][0] == "init"
    assert events[-1]["transition"]["type"] == "finish"
    assert len(events) == Transition.objects.filter(execution_id=execution.id).count()

    rest = client.executions.transitions.stream(
        execution.id, next_page_token=events[1]["next_page_token"]
    )
    resumed = [json.loads(x[6:]) for x in rest.splitlines() if x.startswith("data:")]
    assert [e["transition"]["id"] for e in resumed] == [e["transition"]["id"] for e in events[2:]]


def test_keys_and_workspaces_are_enforced(asgi_server, client, viewer, outsider):
    _, task = make_task(client)
    execution = client.executions.create(task.id, input={"n": 1})
    stranger = Julep(api_key=outsider.key, base_url=f"{asgi_server.url}/julep")
    with pytest.raises(julep.NotFoundError):
        stranger.executions.get(execution.id)
    with pytest.raises(julep.NotFoundError):
        stranger.tasks.get(task.id)
    watcher = Julep(api_key=viewer.key, base_url=f"{asgi_server.url}/julep")
    assert watcher.executions.get(execution.id).id == execution.id
    with pytest.raises(julep.PermissionDeniedError):
        watcher.executions.create(task.id, input={"n": 1})
    nobody = Julep(api_key="stw_nope_nope", base_url=f"{asgi_server.url}/julep", max_retries=0)
    with pytest.raises(julep.AuthenticationError):
        nobody.agents.list()


def test_statuses_and_transition_types_map_to_julep_words():
    running = Execution(status="running", transition_count=2)
    assert julep_status(running) == "starting"
    running.transition_count = 3
    assert julep_status(running) == "running"
    for native, word in {
        "pending": "queued",
        "awaiting_approval": "awaiting_input",
        "awaiting_input": "awaiting_input",
        "completed": "succeeded",
        "failed": "failed",
        "rejected": "failed",
        "cancelled": "cancelled",
    }.items():
        assert julep_status(Execution(status=native)) == word
    cases = {
        ("init", "pending", "pending"): "init",
        ("start", "pending", "running"): "step",
        ("step", "running", "running"): "step",
        ("wait", "running", "awaiting_input"): "wait",
        ("resume", "awaiting_input", "running"): "resume",
        ("approved", "awaiting_approval", "running"): "resume",
        ("rejected", "awaiting_approval", "rejected"): "error",
        ("finish", "running", "completed"): "finish",
        ("error", "running", "failed"): "error",
        ("cancelled", "running", "cancelled"): "cancelled",
    }
    for (kind, src, to), word in cases.items():
        assert transition_type(Transition(type=kind, from_status=src, to_status=to)) == word


def test_create_or_update_makes_a_new_current_version_of_the_task(client):
    agent, task = make_task(client)
    tripled = [{"return": {"n": "$ inputs['n'] * 3"}}]
    updated = client.tasks.create_or_update(
        task.id, agent_id=agent.id, name="triple it", main=tripled, input_schema=NUMBER_SCHEMA
    )
    assert updated.id == task.id and updated.name == "triple it"
    assert client.tasks.get(task.id).version == "2"
    execution = client.executions.create(task.id, input={"n": 3})
    assert poll_to_end(client, execution.id).output == {"n": 9}
    with pytest.raises(julep.NotFoundError):
        client.tasks.create_or_update(
            str(uuid.uuid4()), agent_id=agent.id, name="new", main=tripled
        )
