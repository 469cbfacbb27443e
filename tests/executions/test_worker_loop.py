"""The worker loop in this process: claims runnable executions in batches (never one to two
workers), wakes at once on new work, runs several at once, renews leases, and claims an
expired lease or a due sleeper without any reaper."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

from executions import lifecycle
from executions.engine import queue
from executions.engine.holdings import Holdings
from executions.engine.worker import Worker
from executions.lifecycle import TERMINAL
from executions.models import Execution

from .engine_helpers import make_agent, prompt_workflow, start, steps
from .llm_servers import OpenAIServer

# Threads share the test database: tests/conftest.py puts SQLite's in a file for this.
pytestmark = [pytest.mark.django_db(transaction=True)]

THREE_STEPS = {
    "main": [
        {"evaluate": {"a": "$ inputs['n'] + 1"}},
        {"evaluate": {"b": "$ _['a'] * 2"}},
        {"return": {"n": "$ _['b']"}},
    ]
}


@pytest.fixture
def running_worker():
    started: list[Worker] = []

    def make(**kwargs) -> Worker:
        worker = Worker(name="test", poll_interval=5.0, **kwargs)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        worker.thread = thread
        started.append(worker)
        return worker

    yield make
    for worker in started:
        worker.stop()
        worker.thread.join(10)


def wait_until(predicate, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.01)


def test_a_worker_runs_queued_executions_to_the_end(workspace, running_worker):
    running_worker(concurrency=4)
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    executions = [start(agent, {"n": n}) for n in range(10)]
    ids = [e.pk for e in executions]
    wait_until(lambda: Execution.objects.filter(pk__in=ids, status__in=TERMINAL).count() == 10)
    for execution in Execution.objects.filter(pk__in=ids):
        assert execution.status == "completed", execution.error
        assert execution.output == {"n": (execution.input["n"] + 1) * 2}
        assert steps(execution) == ["main[0]", "main[1]", "main[2]"]
        assert execution.lease_owner == ""


def test_an_idle_worker_wakes_at_once_instead_of_waiting_for_its_poll(workspace, running_worker):
    running_worker(concurrency=2)  # polls only every 5 s
    agent = make_agent(workspace, "quick", "workflow", THREE_STEPS)
    time.sleep(0.3)  # let the worker go idle
    began = time.monotonic()
    execution = start(agent, {"n": 1})
    wait_until(lambda: Execution.objects.get(pk=execution.pk).status in TERMINAL, timeout=4)
    assert time.monotonic() - began < 2.0


def test_an_expired_lease_is_simply_claimable_again(workspace, running_worker):
    agent = make_agent(workspace, "orphan", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 2})
    # A worker claimed it, recorded nothing, and vanished: its lease is past due. No reaper
    # queues it again: the row itself is the queue, and an expired lease is free.
    lifecycle.transition(execution, "running", type="start")
    Execution.objects.filter(pk=execution.pk).update(
        lease_owner="dead-worker", lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    running_worker(concurrency=1)
    wait_until(lambda: Execution.objects.get(pk=execution.pk).status in TERMINAL)
    execution.refresh_from_db()
    assert execution.status == "completed"
    assert execution.output == {"n": 6}


def test_a_live_lease_is_renewed_and_not_claimed_by_another_worker(workspace):
    agent = make_agent(workspace, "held", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 1})
    worker = Worker(name="renewer", maintenance=False)
    Execution.objects.filter(pk=execution.pk).update(
        lease_owner=worker.owner, lease_expires_at=timezone.now() + timedelta(seconds=1)
    )
    worker.hold(str(execution.pk))
    assert worker.renew_leases() == 1
    execution.refresh_from_db()
    assert execution.lease_expires_at > timezone.now() + timedelta(seconds=5)
    assert queue.claim(owner="another", limit=10) == []


def test_two_workers_claiming_at_once_never_get_the_same_execution(workspace):
    agent = make_agent(workspace, "contended", "workflow", THREE_STEPS)
    ids = {str(start(agent, {"n": n}).pk) for n in range(60)}
    claimed: dict[str, list[str]] = {"a": [], "b": []}
    barrier = threading.Barrier(2)

    def claimer(owner: str) -> None:
        barrier.wait()
        while True:
            batch = queue.claim(owner=owner, limit=7)
            if not batch:
                break
            claimed[owner].extend(str(e.pk) for e in batch)
        connections.close_all()

    threads = [threading.Thread(target=claimer, args=(owner,)) for owner in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not set(claimed["a"]) & set(claimed["b"])
    assert sorted(claimed["a"] + claimed["b"]) == sorted(ids)
    owners = dict(Execution.objects.filter(pk__in=ids).values_list("pk", "lease_owner"))
    assert {str(pk): owner for pk, owner in owners.items()} == {
        **{pk: "a" for pk in claimed["a"]},
        **{pk: "b" for pk in claimed["b"]},
    }


def test_a_sleeping_execution_is_claimed_when_due_without_a_wake_up(workspace, running_worker):
    agent = make_agent(
        workspace,
        "sleeper",
        "workflow",
        {"main": [{"sleep": {"seconds": 1.0}}, {"return": {"ok": True}}]},
    )
    running_worker(concurrency=1)
    execution = start(agent)
    wait_until(lambda: Execution.objects.get(pk=execution.pk).status in TERMINAL, timeout=10)
    execution.refresh_from_db()
    assert execution.status == "completed"
    assert execution.output == {"ok": True}


def test_runs_ending_do_not_each_make_an_empty_claim(workspace, running_worker, monkeypatch):
    """With every due row claimed, a run's end frees a thread but brings no work: the loop
    claims again only when work is announced (a wake-up), not once per run that ends (with
    1,000 runs in flight, that was an empty claim statement per run). New work started
    meanwhile is still claimed at once."""
    claims: list[int] = []
    real_claim = queue.claim

    def counted(*, owner: str, limit: int):
        claimed = real_claim(owner=owner, limit=limit)
        claims.append(len(claimed))
        return claimed

    monkeypatch.setattr(queue, "claim", counted)
    delays = [{"content": "ok", "delay": 0.8 + 0.3 * i} for i in range(5)]
    with OpenAIServer(delays) as server:
        slow = make_agent(workspace, "slow", "workflow", prompt_workflow(server.base_url))
        quick = make_agent(workspace, "quick", "workflow", THREE_STEPS)
        ids = [start(slow, {"n": n}).pk for n in range(5)]
        running_worker(concurrency=8)
        wait_until(lambda: len(server.requests) == 5)
        began = time.monotonic()
        late = start(quick, {"n": 1})  # announced while the five wait on the model
        wait_until(lambda: Execution.objects.get(pk=late.pk).status in TERMINAL, timeout=5)
        assert time.monotonic() - began < 0.5
        time.sleep(0.2)  # the wake-ups of the starts (one token each) all taken by now
        before_ends = len(claims)
        wait_until(lambda: Execution.objects.filter(pk__in=ids, status__in=TERMINAL).count() == 5)
    assert Execution.objects.filter(pk__in=ids, status="completed").count() == 5
    # Five ends, 0.3 s apart: the first one's claim finds nothing, the others make none.
    assert len(claims[before_ends:]) <= 1, claims


def test_a_lost_lease_read_for_an_earlier_hold_does_not_stop_the_run_claimed_again(workspace):
    """The tick's read of the held runs runs outside any lock: meanwhile a run may park (no
    owner), be decided and be claimed here again. That read must not stop the new run (CI
    once saw an approved run stop with "another worker took its lease" and hang)."""
    agent = make_agent(workspace, "reheld", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 1})
    key = str(execution.pk)
    owner = "this-worker"
    holdings = Holdings()
    [claimed] = queue.claim(owner=owner, limit=10)
    assert holdings.hold(key)

    def read_while_parking_and_reclaiming(ids):
        holdings.unhold(key)  # the run parks: its lease given back
        queue.release(execution.pk, owner=owner)
        rows = list(Execution.objects.filter(pk__in=ids).values_list("pk", "status", "lease_owner"))
        assert queue.claim(owner=owner, limit=10)  # decided and claimed again, before the note
        assert holdings.hold(key)
        return rows

    holdings.note_states(read_while_parking_and_reclaiming, owner)
    assert holdings.reason(key) is None

    # The same read for the hold it was made for is noted.
    queue.release(execution.pk, owner=owner)
    holdings.note_states(
        lambda ids: Execution.objects.filter(pk__in=ids).values_list("pk", "status", "lease_owner"),
        owner,
    )
    assert holdings.reason(key) == "lease_lost"


def test_a_row_claimed_while_its_run_lets_go_is_handed_back_to_run_again(workspace):
    """A run's thread gives its lease back (a park, a retry) and the claim loop takes the row
    before the thread has let go: no second run starts, and when the thread lets go the row
    is claimable again at once (it sat leased until its lease expired)."""
    agent = make_agent(workspace, "reclaimed", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 1})
    key = str(execution.pk)
    worker = Worker(name="reclaimer", maintenance=False)
    assert queue.claim(owner=worker.owner, limit=10)
    assert worker.hold(key)
    queue.release(execution.pk, owner=worker.owner)  # the thread gives the lease back
    assert [str(e.pk) for e in queue.claim(owner=worker.owner, limit=10)] == [key]
    assert not worker.hold(key)  # still on its thread: not started twice
    worker.unhold(key)  # the thread lets go
    assert [str(e.pk) for e in queue.claim(owner="another", limit=10)] == [key]
