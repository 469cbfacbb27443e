"""What one run costs after its claim, and how a busy worker learns of work due later: a pure
run stores its events with one INSERT, the "does this workspace have webhooks?" question is
asked once per workspace (and asked again at once when this process saves a webhook), and a
wake-up carries a sleep's end so a worker with runs in flight claims it when due."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from channels.layers import get_channel_layer
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals import notifications
from executions.engine import queue, runner, wakeup
from executions.engine.worker import Worker
from executions.lifecycle import TERMINAL
from executions.live import events
from executions.models import Execution, ExecutionEvent

from .engine_helpers import THREE_STEPS, make_agent, prompt_workflow, start
from .llm_servers import OpenAIServer

pytestmark = [pytest.mark.django_db(transaction=True)]


def sql_of(captured: CaptureQueriesContext, table: str, verb: str) -> list[str]:
    return [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].startswith(verb) and table in q["sql"].split("(")[0]
    ]


def test_a_pure_run_stores_its_events_with_one_insert(workspace):
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 4})
    with CaptureQueriesContext(connection) as captured:
        runner.run(execution.pk)
    execution.refresh_from_db()
    assert execution.status == "completed"
    assert execution.output == {"result": 9}
    # One INSERT, on its own or (PostgreSQL) inside the end's one statement (engine/writes.py).
    inserts = [q["sql"] for q in captured.captured_queries if "executionevent" in q["sql"]]
    assert len([sql for sql in inserts if "INSERT INTO" in sql]) == 1
    stored = list(ExecutionEvent.objects.filter(execution=execution).order_by("id"))
    assert [e.type for e in stored] == ["execution", "done"]
    assert stored[1].data["output"] == {"result": 9}


def test_the_webhook_question_is_asked_once_per_workspace_until_a_webhook_is_saved(workspace):
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    notifications._has_webhooks.clear()
    first, second, third = (start(agent, {"n": n}) for n in range(3))
    with CaptureQueriesContext(connection) as captured:
        runner.run(first.pk)
    assert len(sql_of(captured, "approvals_webhook", "SELECT")) == 1
    with CaptureQueriesContext(connection) as captured:
        runner.run(second.pk)
    assert sql_of(captured, "approvals_webhook", "SELECT") == []

    # Saving a webhook in this process drops the cached "no": the next end is delivered.
    notifications.webhook_create(
        workspace=workspace, url="https://hooks.example.com/in", events=["execution.completed"]
    )
    with CaptureQueriesContext(connection) as captured:
        runner.run(third.pk)
    assert sql_of(captured, "approvals_webhook", "SELECT")
    assert notifications.has_webhooks(workspace.pk) is True


def test_a_wake_up_carries_a_later_due_time_to_every_subscriber():
    event = wakeup.subscribe()
    try:
        assert wakeup.take_hint(event) is None
        soon = timezone.now() + timedelta(seconds=2)
        later = timezone.now() + timedelta(seconds=9)
        queue.wake(at=later)
        queue.wake(at=soon)
        queue.wake()  # due now: no hint, and it does not erase the earlier one
        assert event.is_set()
        hint = wakeup.take_hint(event)
        assert hint is not None
        assert 1.0 < hint - time.monotonic() <= 2.0
        assert wakeup.take_hint(event) is None
        # A due time already past is a plain wake-up.
        queue.wake(at=timezone.now() - timedelta(seconds=1))
        assert wakeup.take_hint(event) is None
    finally:
        wakeup.unsubscribe(event)


def test_a_wake_ups_payload_over_redis_reads_back_as_its_due_time():
    assert wakeup._due_of(b"1") is None
    assert wakeup._due_of(b"garbage") is None
    assert wakeup._due_of(repr(1_900_000_000.25).encode()) == 1_900_000_000.25


def test_a_busy_worker_claims_a_sleeper_when_due_while_a_long_run_is_in_flight(workspace):
    with OpenAIServer([{"content": "slow", "delay": 4.0}]) as server:
        slow = make_agent(
            workspace,
            "slow",
            "workflow",
            prompt_workflow(server.base_url),
        )
        sleeper = make_agent(
            workspace,
            "sleeper",
            "workflow",
            {"main": [{"sleep": {"seconds": 1.0}}, {"return": {"ok": True}}]},
        )
        # The safety-net interval is longer than the slow run: only the sleep's own wake-up
        # (its due time) can get the sleeper claimed before the slow run ends.
        worker = Worker(name="busy", concurrency=2, poll_interval=30.0)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            long_run = start(slow, {})
            deadline = time.monotonic() + 10
            while Execution.objects.get(pk=long_run.pk).status != "running":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            napper = start(sleeper, {})
            deadline = time.monotonic() + 20
            while Execution.objects.get(pk=napper.pk).status not in TERMINAL:
                assert time.monotonic() < deadline, "the sleeper was never claimed when due"
                time.sleep(0.02)
            assert Execution.objects.get(pk=napper.pk).output == {"ok": True}
            assert Execution.objects.get(pk=long_run.pk).status == "running"
        finally:
            worker.stop()
            thread.join(15)


def test_a_batch_publishes_its_moves_and_last_entry_and_every_listener_hears_all(
    workspace, monkeypatch
):
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 1})
    sent: list[tuple[str, int | None]] = []
    heard: list[int] = []
    monkeypatch.setattr(
        events, "send", lambda group, message: sent.append((group, message.get("seq")))
    )
    monkeypatch.setattr(
        events, "send_many", lambda items: sent.extend((g, m.get("seq")) for g, m in items)
    )
    monkeypatch.setattr(
        events, "_listeners", [lambda *, execution, transition: heard.append(transition.seq)]
    )
    runner.run(execution.pk)
    execution.refresh_from_db()
    assert execution.status == "completed"
    # init is seq 1; the run wrote start (2), three steps (3-5) and the finish (6) at once.
    assert heard == [2, 3, 4, 5, 6]
    own = [seq for group, seq in sent if group == events.execution_group(execution.pk)]
    assert 3 not in own and 4 not in own and 5 not in own
    assert 2 in own and 6 in own


def test_a_batch_end_is_published_from_its_thread_unless_the_publisher_has_a_queue(
    settings, monkeypatch
):
    """An idle worker's batch end goes out from the claiming thread (one pipeline, no hop to
    the publisher thread); while the publisher has messages queued it goes behind them, so a
    group's messages never overtake each other."""
    redis = pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/6"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=0.5).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "executions.live.layer.PubSubLayer",
            "CONFIG": {"hosts": [url], "prefix": "direct-test"},
        }
    }
    layer = get_channel_layer()
    subscriber = redis.Redis.from_url(url).pubsub(ignore_subscribe_messages=True)
    subscriber.subscribe("direct-test__group__g1")
    subscriber.get_message(timeout=1)  # the subscribe confirmation
    handed: list = []
    monkeypatch.setattr(
        events._Publisher, "submit_many", lambda self, lyr, items: handed.append(items)
    )

    events.send_many([("g1", {"type": "x.y", "n": 1}), ("g1", {"type": "x.y", "n": 2})])
    got = [subscriber.get_message(timeout=2) for _ in range(2)]
    assert [layer.deserialize(m["data"])["n"] for m in got] == [1, 2]
    assert handed == []

    monkeypatch.setattr(events._publisher(), "pending", 1)  # something queued ahead
    events.send_many([("g1", {"type": "x.y", "n": 3})])
    assert handed == [[("g1", {"type": "x.y", "n": 3})]]
    assert subscriber.get_message(timeout=0.2) is None
    subscriber.close()


def test_the_wake_up_channel_is_the_deployments_redis_database():
    """Pub/sub ignores the database number: the channel carries it, so deployments sharing a
    Redis server (on /0 and /1, say) do not wake each other's workers."""
    import redis

    assert wakeup.channel_of(redis.Redis.from_url("redis://127.0.0.1:6379/1")).endswith(":1")
    assert wakeup.channel_of(redis.Redis.from_url("redis://127.0.0.1:6379")).endswith(":0")
