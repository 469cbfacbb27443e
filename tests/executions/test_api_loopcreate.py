"""Creates on the event loop (executions/api/loopcreate.py) keep the contract: the same
requests through ApiHandler with and without them give the same status, headers and body
(ids and times aside), write the same row and `init` entry, publish the same event, honour
Idempotency-Keys (also at once), and a stale cached agent never starts a run the full path
would refuse. PostgreSQL only: SQLite has no async driver, so it always takes the lanes."""

from __future__ import annotations

import asyncio
import json

import pytest
from django.db import connection, transaction

from config.asgi import FAST_READS, LOOP_READS, django_app
from executions import lifecycle, services, tasks
from executions.api.handler import ApiHandler
from executions.api.loopcreate import NATIVE_CREATES
from executions.live import events
from executions.models import Execution, Transition
from tests.executions.test_api_fastpath import call

VOLATILE = {"id", "execution_id", "trace_id", "created_at", "updated_at"}


@pytest.fixture
def pg(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("the event-loop creates are PostgreSQL-only")


def scope_for(method: str, path: str, headers) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            *((k.lower().encode(), v.encode()) for k, v in headers),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def _one(handler, path: str, body: bytes, headers) -> tuple:
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    await handler(scope_for("POST", path, headers), receive, send)
    start = sent[0]
    return start["status"], sorted(start["headers"]), b"".join(m.get("body", b"") for m in sent[1:])


def post(handler, path: str, body, headers=(), times: int = 1) -> list[tuple]:
    """`times` copies of one request, all at once on one loop."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = [("content-type", "application/json"), *headers]

    async def run():
        try:
            return await asyncio.gather(*(_one(handler, path, raw, headers) for _ in range(times)))
        finally:
            await handler.aclose()

    return asyncio.run(run())


def handlers():
    fast = ApiHandler(
        fallback=django_app,
        fast_reads=FAST_READS,
        loop_reads=LOOP_READS,
        loop_creates=NATIVE_CREATES,
    )
    assert fast.creates is not None
    return fast, ApiHandler(fallback=django_app)


def steady(reply: tuple) -> tuple:
    status, headers, body = reply
    value = json.loads(body)
    data = value.get("data")
    if isinstance(data, dict):
        value["data"] = {k: v for k, v in data.items() if k not in VOLATILE}
    return status, [h for h in headers if h[0] != b"content-length"], value


def row(execution_id: str) -> dict:
    execution = Execution.objects.get(pk=execution_id)
    [step] = Transition.objects.filter(execution=execution)
    skip = {"id", "trace_id", "created_at", "updated_at", "execution_id", "runnable_at"}
    keep = {k: v for k, v in vars(execution).items() if k not in skip and not k.startswith("_")}
    entry = {k: v for k, v in vars(step).items() if k not in skip and not k.startswith("_")}
    return {"execution": keep, "init": entry, "runnable": execution.runnable_at is not None}


@pytest.fixture
def external(owner):
    return services.agent_create(workspace=owner.workspace, name="outside", type="external")


def key_of(member) -> list:
    return [("x-api-key", member.key)]


def test_a_create_on_the_loop_answers_and_writes_as_the_full_path(
    pg, owner, external, agent, monkeypatch
):
    woken = []
    # The wake-up after commit (its `fresh` row is the token's business: test_token_runs.py).
    monkeypatch.setattr(tasks, "enqueue_run", lambda pk, **_: woken.append(pk))
    fast, slow = handlers()
    for target, body in (
        (external, {"input": {"n": 1}, "metadata": {"m": 1}}),
        (agent, {"input": {"n": 2}, "session_id": "s"}),
    ):
        path = f"/api/v1/agents/{target.pk}/execute"
        [first] = post(fast, path, body, key_of(owner))  # the lanes, which fill the cache
        assert fast.creates.served["api:agent_execute"] == 0 or target is agent
        before = fast.creates.served["api:agent_execute"]
        [on_loop] = post(fast, path, body, key_of(owner))
        assert fast.creates.served["api:agent_execute"] == before + 1
        [full] = post(slow, path, body, key_of(owner))
        assert steady(on_loop) == steady(full) == steady(first)
        assert on_loop[0] == 201
        loop_id = json.loads(on_loop[2])["data"]["id"]
        full_id = json.loads(full[2])["data"]["id"]
        assert row(loop_id) == row(full_id)
        assert row(loop_id)["runnable"] == (target is agent)
        # Workers are woken for a run they claim (not for an external agent's), on commit.
        assert (str(loop_id) in map(str, woken)) == (target is agent)


def test_post_executions_by_id_and_by_name_on_the_loop(pg, owner, external):
    fast, slow = handlers()
    for ref in (str(external.pk), external.name):
        body = {"agent_id": ref, "input": {"a": [1, "b"]}}
        post(fast, "/api/v1/executions", body, key_of(owner))
        before = fast.creates.served["api:execution_create"]
        [on_loop] = post(fast, "/api/v1/executions", body, key_of(owner))
        assert fast.creates.served["api:execution_create"] == before + 1
        [full] = post(slow, "/api/v1/executions", body, key_of(owner))
        assert steady(on_loop) == steady(full)


def test_refusals_are_the_full_paths_own(pg, owner, viewer, external, agent):
    fast, slow = handlers()
    post(fast, f"/api/v1/agents/{agent.pk}/execute", {"input": {"n": 1}}, key_of(owner))
    post(fast, f"/api/v1/agents/{external.pk}/execute", {"input": {}}, key_of(owner))
    cases = [
        (f"/api/v1/agents/{agent.pk}/execute", {"input": {"n": "x"}}, key_of(owner)),  # schema
        (f"/api/v1/agents/{agent.pk}/execute", {"input": {"n": 1}}, key_of(viewer)),  # role
        (f"/api/v1/agents/{agent.pk}/execute", {"input": {"n": 1}}, []),  # no key
        (f"/api/v1/agents/{agent.pk}/execute", {"input": {"n": 1}}, [("x-api-key", "nope")]),
        (f"/api/v1/agents/{agent.pk}/execute", b'{"input": ', key_of(owner)),  # malformed
        (f"/api/v1/agents/{external.pk}/execute", {"input": "\u0000"}, key_of(owner)),
        (f"/api/v1/agents/{external.pk}/execute", {"metadata": []}, key_of(owner)),
        (f"/api/v1/agents/{external.pk}/execute", {"sync": "yes"}, key_of(owner)),
        (f"/api/v1/agents/{external.pk}/execute", [], key_of(owner)),
        (
            f"/api/v1/agents/{external.pk}/execute",
            {},
            [*key_of(owner), ("idempotency-key", "a\u0000")],
        ),
        ("/api/v1/agents/01a2287a-81c7-75a6-b24d-849799f7e5ef/execute", {}, key_of(owner)),
        ("/api/v1/executions", {"input": {}}, key_of(owner)),  # no agent_id
    ]
    before = dict(fast.creates.served)
    count = Execution.objects.count()
    for path, body, headers in cases:
        [one] = post(fast, path, body, headers)
        [other] = post(slow, path, body, headers)
        assert one == other, (path, body)
        assert one[0] >= 400, (path, body, one)
    assert dict(fast.creates.served) == before
    assert Execution.objects.count() == count


def test_an_idempotency_key_is_honoured_on_the_loop_also_at_once(pg, owner, external):
    fast, _ = handlers()
    path = f"/api/v1/agents/{external.pk}/execute"
    post(fast, path, {"input": {}}, key_of(owner))  # fills the cache
    headers = [*key_of(owner), ("idempotency-key", "k-1")]
    replies = post(fast, path, {"input": {"n": 1}}, headers, times=8)
    statuses = sorted(r[0] for r in replies)
    assert statuses == [200] * 7 + [201]
    assert len({json.loads(r[2])["data"]["id"] for r in replies}) == 1
    assert Execution.objects.filter(idempotency_key="k-1").count() == 1
    [again] = post(fast, path, {"input": {"n": 1}}, headers)
    assert again[0] == 200
    [conflict] = post(fast, path, {"input": {"n": 2}}, headers)
    assert conflict[0] == 409


def test_a_stale_cached_agent_goes_the_full_way(pg, owner, agent):
    fast, _ = handlers()
    path = f"/api/v1/agents/{agent.pk}/execute"
    post(fast, path, {"input": {"n": 1}}, key_of(owner))
    # A new current version that wants a string: the cached one wanted a number.
    services.agent_version_create(
        agent=agent,
        version="2.0",
        config=agent.current_version.config,
        input_schema={"type": "object", "properties": {"n": {"type": "string"}}},
        set_current=True,
    )
    before = fast.creates.served["api:agent_execute"]
    [refused] = post(fast, path, {"input": {"n": 1}}, key_of(owner))
    assert refused[0] == 422
    [ok] = post(fast, path, {"input": {"n": "one"}}, key_of(owner))
    assert ok[0] == 201
    assert fast.creates.served["api:agent_execute"] == before


def test_a_deleted_agent_is_not_started_from_the_cache(pg, owner, external):
    fast, slow = handlers()
    path = f"/api/v1/agents/{external.pk}/execute"
    post(fast, path, {"input": {}}, key_of(owner))
    Execution.objects.filter(agent=external).delete()
    services.agent_delete(agent=external)
    [one] = post(fast, path, {"input": {}}, key_of(owner))
    [other] = post(slow, path, {"input": {}}, key_of(owner))
    assert one == other and one[0] == 404


def test_the_start_is_published_after_it_commits(pg, owner, external):
    heard = []

    def listener(*, execution, transition):
        committed = Transition.objects.filter(pk=transition.pk).exists()
        heard.append((str(execution.pk), transition.type, transition.seq, committed))

    events.add_listener(listener)
    try:
        fast, _ = handlers()
        path = f"/api/v1/agents/{external.pk}/execute"
        post(fast, path, {"input": {}}, key_of(owner))
        heard.clear()
        [reply] = post(fast, path, {"input": {}}, key_of(owner))
        assert fast.creates.served["api:agent_execute"] == 1
    finally:
        events._listeners.remove(listener)
    assert heard == [(json.loads(reply[2])["data"]["id"], "init", 1, True)]


def test_discuro_retrieve_on_the_loop_answers_as_the_plain_view(pg, owner, external):
    """Discuro's retrieve (a POST, its id in the query) on the event-loop read path: a
    started and a passed run there, a failed one (whose `results` read its entries) and every
    error on the thread path, each byte for byte what the plain view answers."""
    runs = [services.execution_start(workspace=owner.workspace, agent=external)[0] for _ in "abc"]
    with transaction.atomic():
        lifecycle.transition(runs[1], "running", type="started")
        lifecycle.transition(runs[1], "completed", type="completed", fields={"output": {"x": 1}})
        lifecycle.transition(runs[2], "cancelled", type="cancelled", message="stop")
    fast, slow = handlers()
    path, bearer = "/discuro/v1/executions/retrieve", [("authorization", f"Bearer {owner.key}")]
    call(fast, "POST", path, query=f"id={runs[0].pk}", headers=bearer)  # the key, cached
    for i, run in enumerate(runs):
        before = fast.loop.served["discuro-retrieve"]
        one = call(fast, "POST", path, query=f"id={run.pk}", headers=bearer)
        assert one == call(slow, "POST", path, query=f"id={run.pk}", headers=bearer)
        assert one[0] == 200
        assert fast.loop.served["discuro-retrieve"] == before + (i < 2)
    for query, headers in (("id=nope", bearer), (f"ID={runs[0].pk}", bearer), ("", bearer)):
        assert call(fast, "POST", path, query=query, headers=headers) == call(
            slow, "POST", path, query=query, headers=headers
        )
    assert call(fast, "POST", path, query=f"id={runs[0].pk}")[0] == 401
