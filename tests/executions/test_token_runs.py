"""A due-now token that carries its run (#10, idle latency; engine/tokens.py): a worker that
takes it ends a pure run in ONE compare-and-set, without claiming it first; a copy that is no
longer the row writes nothing and the run is claimed from the table."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions import lifecycle, services
from executions.engine import batch, queue, tokens, wakeup
from executions.lifecycle import Status
from executions.models import Execution

from .engine_helpers import THREE_STEPS, drain, make_agent, start, steps

pytestmark = [pytest.mark.django_db(transaction=True)]

postgres_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the one-statement end is PostgreSQL's"
)


def columns(execution: Execution) -> dict:
    return {f.attname: getattr(execution, f.attname) for f in Execution._meta.concrete_fields}


def test_a_fresh_workflow_start_travels_whole_and_comes_back_exactly(workspace):
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 7, "text": 'é ✓ "quoted"', "f": 2.5, "deep": [None, True]})
    execution.cost = Decimal("0.12345678")  # a column of every kind, as stored
    token = tokens.token_of(execution)
    assert token != tokens.WAKE
    copy = tokens.run_of(token)
    assert columns(copy) == columns(Execution.objects.get(pk=execution.pk)) | {
        "cost": Decimal("0.12345678")
    }
    assert copy.created_at.microsecond == execution.created_at.microsecond
    assert not copy._state.adding


def test_runs_a_token_cannot_end_alone_only_wake(workspace):
    """An agent starts with a model call, a child's end wakes its parent, a large input stays
    in the database, and a token of other columns (another version) is read as a wake-up."""
    model_agent = make_agent(workspace, "chat", "agent", {"model": {"provider": "openai"}})
    assert tokens.token_of(start(model_agent, {"n": 1})) == tokens.WAKE
    flow = make_agent(workspace, "three", "workflow", THREE_STEPS)
    assert tokens.token_of(start(flow, {"n": 1, "blob": "x" * tokens.MAX_TOKEN_BYTES})) == (
        tokens.WAKE
    )
    child = start(flow, {"n": 1})
    child.parent_id = uuid.uuid4()
    assert tokens.token_of(child) == tokens.WAKE
    fresh = Execution.objects.get(pk=start(flow, {"n": 1}).pk)  # agent not attached: no query
    assert tokens.token_of(fresh) == tokens.WAKE
    assert tokens.run_of(b'{"shape": "id,status", "row": [1, 2]}') is None
    assert tokens.run_of(b"not json") is None
    assert tokens.run_of(tokens.WAKE) is None


def test_a_forged_or_altered_token_is_never_computed(workspace, settings):
    """Redis is not trusted with an execution's input: a token whose row was altered (another
    input for a real execution), or signed with another key, is a plain wake-up."""
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    token = tokens.token_of(start(agent, {"n": 1}))
    assert tokens.run_of(token) is not None
    altered = token.replace(b'{"n":1}', b'{"n":9}')
    assert altered != token and tokens.run_of(altered) is None
    mac, _, body = token.partition(b".")
    assert tokens.run_of(b"0" * len(mac) + b"." + body) is None
    settings.SECRET_KEY = "another deployment's key " * 3
    assert tokens.run_of(token) is None


@postgres_only
def test_a_pure_run_from_its_token_ends_in_one_statement_without_a_claim(workspace):
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 20})
    claimed_way = start(agent, {"n": 20})
    copy = tokens.run_of(tokens.token_of(execution))
    with CaptureQueriesContext(connection) as captured:
        assert batch.run_token(copy) is True
    writes = [q["sql"] for q in captured.captured_queries if not q["sql"].startswith("SELECT")]
    assert len(writes) == 1 and "won AS (UPDATE" in writes[0]
    assert not any("lease_owner = %s, lease_expires_at" in sql for sql in writes)  # no claim
    done = Execution.objects.get(pk=execution.pk)
    assert done.status == Status.COMPLETED and done.output == {"result": 41}
    assert done.lease_owner == "" and done.duration_ms is not None
    # The same record as a run claimed from the table.
    assert steps(done) == steps(drain(claimed_way))
    assert done.transition_count == Execution.objects.get(pk=claimed_way.pk).transition_count


@postgres_only
def test_a_token_whose_run_was_claimed_meanwhile_writes_nothing(workspace):
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 1})
    token = tokens.token_of(execution)
    [claimed] = queue.claim(owner="other-worker", limit=1)
    assert claimed.pk == execution.pk
    assert batch.run_token(tokens.run_of(token)) is False
    row = Execution.objects.get(pk=execution.pk)
    assert (row.status, row.transition_count, row.lease_owner) == (
        Status.PENDING,
        1,
        "other-worker",
    )


@postgres_only
def test_a_stale_token_writes_nothing_and_the_run_is_claimed_as_any(workspace):
    """A comment landed between the start and the token: the copy's history length is not the
    row's, so its end is refused; the run is still runnable and a claim runs it whole."""
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 1})
    token = tokens.token_of(execution)
    lifecycle.record(Execution.objects.get(pk=execution.pk), type="comment", message="hi")
    assert batch.run_token(tokens.run_of(token)) is False
    row = Execution.objects.get(pk=execution.pk)
    assert (row.status, row.transition_count) == (Status.PENDING, 2)
    assert drain(row).status == Status.COMPLETED


@postgres_only
def test_a_cancelled_run_is_not_brought_back_by_its_token(workspace):
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 1})
    token = tokens.token_of(execution)
    services.execution_cancel(execution=execution, actor=lifecycle.SYSTEM)
    assert batch.run_token(tokens.run_of(token)) is False
    assert Execution.objects.get(pk=execution.pk).status == Status.CANCELLED


@postgres_only
def test_a_run_that_needs_a_thread_is_left_to_the_claim(workspace):
    flow = {"main": [{"evaluate": {"x": "$ 1"}}, {"approval": {"title": "Go on?"}}]}
    agent = make_agent(workspace, "gated", "workflow", flow)
    execution = start(agent, {"n": 1})
    assert batch.run_token(tokens.run_of(tokens.token_of(execution))) is False
    row = Execution.objects.get(pk=execution.pk)
    assert (row.status, row.transition_count, row.lease_owner) == (Status.PENDING, 1, "")


def test_a_taken_token_goes_to_the_runner_or_back_as_it_was(settings, monkeypatch):
    """wakeup's side: a run token is handed to the subscriber that runs tokens (no wake-up if
    it ran it, a wake-up if not), and pushed back unchanged by a process without room."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url("redis://127.0.0.1:6379/4", socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.REDIS_URL = "redis://127.0.0.1:6379/4"
    monkeypatch.setattr(wakeup, "CHANNEL", f"steward:wakeup-test-{uuid.uuid4().hex[:8]}")
    for name in ("_subscribers", "_notified"):
        monkeypatch.setattr(wakeup, name, set())
    for name in ("_ready", "_on_run", "_hints"):
        monkeypatch.setattr(wakeup, name, {})
    key = wakeup.tokens_of(client)
    room = {"free": True, "ran": []}

    def run(token: bytes) -> bool:
        room["ran"].append(token)
        return token == b'{"ends":"here"}'

    event = wakeup.subscribe(ready=lambda: room["free"], on_run=run)
    try:
        event.clear()
        wakeup.take_token(client, key, b'{"ends":"here"}')
        assert room["ran"] == [b'{"ends":"here"}'] and not event.is_set()
        wakeup.take_token(client, key, b'{"needs":"a claim"}')
        assert event.is_set()  # not run here: the worker claims it
        event.clear()
        wakeup.take_token(client, key, wakeup.TOKEN_WAKE)
        assert event.is_set() and len(room["ran"]) == 2  # a plain token is not offered
        room["free"] = False
        wakeup.take_token(client, key, b'{"ends":"here"}')
        assert client.lrange(key, 0, -1) == [b'{"ends":"here"}']
    finally:
        wakeup.unsubscribe(event)
        client.delete(key)
