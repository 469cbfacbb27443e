"""Waking ONE idle worker (#10, IDLE): work due now is one token on a Redis list, taken by one
worker process with room, not a broadcast that woke every worker to claim the same row."""

from __future__ import annotations

import gc
import threading
import time
import uuid
import weakref

import pytest

from executions.engine import wakeup
from executions.engine import worker as worker_module
from executions.engine.worker import CLAIM_BATCH, Worker
from executions.models import Execution

from .engine_helpers import THREE_STEPS, make_agent, start

URL = "redis://127.0.0.1:6379/4"


@pytest.fixture
def redis_client(settings, monkeypatch):
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(URL, socket_connect_timeout=0.5)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.REDIS_URL = URL
    # A channel (and token list) of this test's own: a taker thread another test started in
    # this process listens on the usual one.
    monkeypatch.setattr(wakeup, "CHANNEL", f"steward:wakeup-test-{uuid.uuid4().hex[:8]}")
    monkeypatch.setattr(wakeup, "_redis", client)
    monkeypatch.setattr(wakeup, "_failed_at", -1e9)
    # This process's subscribers as if none but the test's: a worker another test made and
    # left subscribed would have room, and this process would take tokens for it.
    monkeypatch.setattr(wakeup, "_subscribers", set())
    monkeypatch.setattr(wakeup, "_ready", {})
    monkeypatch.setattr(wakeup, "_on_run", {})
    monkeypatch.setattr(wakeup, "_notified", set())
    monkeypatch.setattr(wakeup, "_hints", {})
    yield client
    client.delete(wakeup.tokens_of(client))


def test_a_due_now_wake_up_is_one_token_not_a_broadcast(redis_client):
    key = wakeup.tokens_of(redis_client)
    listener = redis_client.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(wakeup.channel_of(redis_client))
    listener.get_message(timeout=1)
    wakeup.notify()
    wakeup.flush()
    assert redis_client.llen(key) == 1
    assert listener.get_message(timeout=0.2) is None  # no worker woken by a broadcast
    listener.close()


def test_tokens_nobody_takes_do_not_pile_up(redis_client):
    for _ in range(wakeup.TOKENS_MAX * 2):
        wakeup.notify()
        wakeup.flush()
    assert redis_client.llen(wakeup.tokens_of(redis_client)) == wakeup.TOKENS_MAX


def test_a_token_wakes_a_worker_with_room_and_is_passed_on_without(redis_client):
    """Taken by a process whose workers have no room (they took runs since the BLPOP began):
    pushed back for another, never dropped."""
    key = wakeup.tokens_of(redis_client)
    room = {"free": False}
    event = wakeup.subscribe(ready=lambda: room["free"])
    try:
        event.clear()
        redis_client.lpush(key, b"1")
        assert redis_client.blpop([key], timeout=1)
        wakeup.take_token(redis_client, key)
        assert not event.is_set()
        assert redis_client.llen(key) == 1  # back for another process
        room["free"] = True
        assert redis_client.blpop([key], timeout=1)
        wakeup.take_token(redis_client, key)
        assert event.is_set()
        assert redis_client.llen(key) == 0
    finally:
        wakeup.unsubscribe(event)


def test_the_taker_takes_tokens_only_while_a_worker_has_room(redis_client, monkeypatch):
    """The process's taker thread blocks on the list only while one of its workers could
    claim, so a token goes to a worker that can use it; a run's end (room again) lets it take
    the token that waited."""
    monkeypatch.setattr(wakeup, "TOKEN_WAIT_SECONDS", 0.2)
    key = wakeup.tokens_of(redis_client)
    room = {"free": False}
    event = wakeup.subscribe(ready=lambda: room["free"])
    taker = threading.Thread(target=wakeup._take, daemon=True)
    try:
        event.clear()
        taker.start()
        redis_client.lpush(key, b"1")
        assert not event.wait(0.5)
        assert redis_client.llen(key) == 1  # left for a worker with room
        room["free"] = True
        wakeup.room_changed()
        assert event.wait(2)
        # (Another taker of this process, a worker test's, may wake the event first with a
        # token of its own list: this one's token is taken all the same.)
        deadline = time.monotonic() + 2
        while redis_client.llen(key) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert redis_client.llen(key) == 0
    finally:
        room["free"] = False  # the thread stays (daemon) but takes nothing more
        wakeup.unsubscribe(event)


def test_a_worker_has_room_while_a_claim_could_take_a_run():
    worker = Worker(concurrency=2, maintenance=False)
    try:
        assert not worker.has_room()  # made but not running: takes no tokens
        worker._running = True  # as inside run()
        assert worker.has_room()
        worker._inflight = 2
        worker._batch_credit = 0
        assert not worker.has_room()  # every thread busy, no pure run finished lately
        worker._batch_credit = 3
        assert worker.has_room() and worker.claim_limit() == 3
        worker._batch_credit = CLAIM_BATCH
        worker.stop()
        assert not worker.has_room()
    finally:
        wakeup.unsubscribe(worker._wake)


@pytest.mark.django_db(transaction=True)
def test_a_worker_whose_claim_fills_its_batch_passes_a_token_on(workspace, monkeypatch):
    """Only one worker is woken per token: one that finds a backlog (its claim came back
    full) passes a token on, so another worker with room joins in."""
    passed: list[int] = []
    monkeypatch.setattr(worker_module, "CLAIM_BATCH", 2)
    monkeypatch.setattr(wakeup, "pass_on", lambda: passed.append(1))
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    ids = [start(agent, {"n": n}).pk for n in range(5)]
    worker = Worker(name="backlog", concurrency=1, poll_interval=5.0, maintenance=False)
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while Execution.objects.filter(pk__in=ids, status="completed").count() < 5:
            assert time.monotonic() < deadline, "timed out"
            time.sleep(0.02)
    finally:
        worker.stop()
        thread.join(10)
    assert passed  # the first claim took 2 of 5: full


def test_a_worker_dropped_without_unsubscribing_is_not_kept_alive(redis_client):
    """The wake-up holds a worker's `has_room` weakly: a Worker built and dropped (the tests
    do) must not live on in the module with its lease keeper's database connection, nor count
    as room for tokens."""
    worker = Worker(concurrency=2, maintenance=False)
    event, gone = worker._wake, weakref.ref(worker)
    del worker
    gc.collect()
    assert gone() is None
    assert not wakeup.has_room()  # the dropped worker's subscription is pruned, not "room"
    assert event not in wakeup._subscribers
