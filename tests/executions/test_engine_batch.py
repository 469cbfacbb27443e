"""Group commit (engine/batch.py): a claimed batch of pure runs is computed on one thread and
written in one transaction. A run cancelled between its claim and the batch's write is not
written (and the others are); a batch that cannot be written leaves nothing behind and its
runs finish alone, each once; a run that reaches a side effect leaves the batch before it
does anything and finishes on a thread."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext

from executions import lifecycle, rollups
from executions.engine import batch, queue, runner
from executions.lifecycle import Status
from executions.live import events
from executions.models import Execution, ExecutionEvent, ExecutionRollup, Transition

from .engine_helpers import THREE_STEPS, make_agent, start, steps

pytestmark = [pytest.mark.django_db(transaction=True)]

OWNER = "batch-test"


def claim_all(count: int) -> list[Execution]:
    claimed = queue.claim(owner=OWNER, limit=100)
    assert len(claimed) == count
    return claimed


@contextmanager
def cancelled_before_the_write(victim: Execution):
    """Someone cancels `victim` while the batch computes: after the claim, before the write."""
    original = batch.write

    def write_after_a_cancel(ready):
        row = Execution.objects.get(pk=victim.pk)
        lifecycle.transition(row, Status.CANCELLED, type="cancelled", message="stop")
        return original(ready)

    batch.write = write_after_a_cancel
    try:
        yield
    finally:
        batch.write = original


def assert_written_once(execution: Execution, n: int) -> None:
    execution.refresh_from_db()
    assert execution.status == Status.COMPLETED
    assert execution.output == {"result": n * 2 + 1}
    assert execution.lease_owner == ""
    seqs = list(execution.transitions.order_by("seq").values_list("seq", flat=True))
    assert seqs == list(range(1, execution.transition_count + 1))  # no gap, no repeat
    assert steps(execution) == ["main[0]", "main[1]", "main[2]"]
    types = list(ExecutionEvent.objects.filter(execution=execution).values_list("type", flat=True))
    assert types == ["execution", "done"]


def test_a_batch_writes_every_pure_run_in_one_go(workspace):
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    runs = [start(agent, {"n": n}) for n in range(5)]
    leftover = batch.run_batch(claim_all(5), owner=OWNER)
    assert leftover == []
    for n, execution in enumerate(runs):
        assert_written_once(execution, n)
    counted = sum(
        ExecutionRollup.objects.filter(agent=agent, status="completed").values_list(
            "count", flat=True
        )
    )
    assert counted == 5


def test_an_idle_batch_writes_its_run_in_one_statement(workspace, monkeypatch):
    """One run claimed alone (an idle worker): on PostgreSQL its whole end — the
    compare-and-set UPDATE, its transitions, its events, its rollup and duration bucket — is
    ONE autocommitted statement (lifecycle_batch.append_alone); elsewhere one transaction.
    Each object published gets its own row's id."""
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 3})
    written: list = []
    real_steps, real_events = events.transitions_committed, events.stream_events

    def steps_spy(batch_, stored=()):
        written.extend(step for _, own in batch_ for step in own)
        written.extend(stored)  # a lone end's events go in the same hand-over
        real_steps(batch_, stored=stored)

    def events_spy(stored):
        written.extend(stored)
        real_events(stored)

    monkeypatch.setattr(events, "transitions_committed", steps_spy)
    monkeypatch.setattr(events, "stream_events", events_spy)
    claimed = claim_all(1)
    with CaptureQueriesContext(connection) as captured:
        assert batch.run_batch(claimed, owner=OWNER) == []
    assert_written_once(execution, 3)
    writes = [q["sql"] for q in captured.captured_queries if not q["sql"].startswith("SELECT")]
    if connection.vendor == "postgresql":
        assert len(writes) == 1
        for table in ("execution", "transition", "executionevent", "executionrollup"):
            assert f"executions_{table}" in writes[0]
    rows = {(type(obj), obj.pk) for obj in written}
    assert len(rows) == len(written) == execution.transition_count - 1 + 2  # all but init
    for obj in written:
        stored = type(obj).objects.get(pk=obj.pk)
        assert stored.execution_id == execution.pk
        assert getattr(stored, "seq", None) == getattr(obj, "seq", None)
        assert stored.type == obj.type
    counted = ExecutionRollup.objects.filter(agent=agent, status="completed")
    assert sum(counted.values_list("count", flat=True)) == 1


def test_a_run_alone_cancelled_before_its_write_is_not_written(workspace):
    """The one-statement end of a run claimed alone: its compare-and-set loses (cancelled
    meanwhile), and none of its rows (entries, events, rollup) is inserted."""
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    victim = start(agent, {"n": 1})
    claimed = claim_all(1)
    with cancelled_before_the_write(victim):
        leftover = batch.run_batch(claimed, owner=OWNER)
    assert [execution.pk for execution, _ in leftover] == [victim.pk]
    for execution, rows in leftover:
        runner.run_claimed(execution, owner=OWNER, rows=rows)
    victim.refresh_from_db()
    assert victim.status == Status.CANCELLED
    assert not Transition.objects.filter(execution=victim, type__in=["step", "finish"]).exists()
    assert not ExecutionEvent.objects.filter(execution=victim).exists()
    assert not ExecutionRollup.objects.filter(agent=agent, status="completed").exists()


def test_a_run_alone_whose_statement_fails_leaves_nothing_and_ends_once(workspace, monkeypatch):
    """What a kill -9 during the one-statement end leaves: the statement is its own
    transaction, so nothing of it (here its last part, the rollups, fails after the UPDATE and
    the INSERTs in the same statement); the run, run again, ends exactly once."""
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 2})
    claimed = claim_all(1)
    real = rollups.upserts_sql

    def broken(*args, **kwargs):
        return [*real(*args, **kwargs), ("INSERT INTO no_such_table SELECT 1", [])]

    with monkeypatch.context() as patch:
        patch.setattr(rollups, "upserts_sql", broken)
        leftover = batch.run_batch(claimed, owner=OWNER)
    if connection.vendor == "postgresql":
        assert [e.pk for e, _ in leftover] == [execution.pk]
        row = Execution.objects.get(pk=execution.pk)
        assert row.status == Status.PENDING and row.transition_count == 1
        assert not ExecutionEvent.objects.filter(execution=execution).exists()
        assert not ExecutionRollup.objects.filter(agent=agent).exists()
        for claimed_row, rows in leftover:
            runner.run_claimed(claimed_row, owner=OWNER, rows=rows)
    assert_written_once(execution, 2)
    assert sum(ExecutionRollup.objects.filter(agent=agent).values_list("count", flat=True)) == 1


def test_a_run_cancelled_before_the_batch_write_is_not_written_and_the_others_are(workspace):
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    runs = [start(agent, {"n": n}) for n in range(4)]
    claimed = claim_all(4)
    victim = runs[2]
    with cancelled_before_the_write(victim):
        leftover = batch.run_batch(claimed, owner=OWNER)
    # The loser goes back to the caller (a thread), whose own write then finds it cancelled.
    assert [execution.pk for execution, _ in leftover] == [victim.pk]
    for execution, rows in leftover:
        runner.run_claimed(execution, owner=OWNER, rows=rows)
    for n, execution in enumerate(runs):
        if execution.pk == victim.pk:
            continue
        assert_written_once(execution, n)
    victim.refresh_from_db()
    assert victim.status == Status.CANCELLED
    assert not Transition.objects.filter(execution=victim, type__in=["step", "finish"]).exists()
    assert not ExecutionEvent.objects.filter(execution=victim, type="done").exists()


def test_a_batch_that_cannot_be_written_leaves_nothing_and_each_run_ends_once(
    workspace, monkeypatch
):
    """What a kill -9 in the middle of the batch's commit leaves: the transaction either
    committed whole or not at all. Here it fails after its UPDATE, its INSERT of entries and
    events and its rollups' UPDATE (the durations' upsert raises): nothing of it stays, and
    the runs, run again, end exactly once."""
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    runs = [start(agent, {"n": n}) for n in range(3)]
    claimed = claim_all(3)

    def broken(*args, **kwargs):
        raise DatabaseError("the connection went away mid-commit")

    with monkeypatch.context() as patch:
        # The durations' upsert, the last statement before the COMMIT.
        patch.setattr(rollups, "durations_add", broken)
        leftover = batch.run_batch(claimed, owner=OWNER)
    assert sorted(e.pk for e, _ in leftover) == sorted(e.pk for e in runs)
    for execution in runs:
        row = Execution.objects.get(pk=execution.pk)
        assert row.status == Status.PENDING
        assert row.transition_count == 1  # only its init
        assert row.lease_owner == OWNER  # still ours: the thread goes on from here
    # The objects handed on are as claimed (the failed write did not leave them "completed").
    assert {e.status for e, _ in leftover} == {Status.PENDING}
    for execution, rows in leftover:
        runner.run_claimed(execution, owner=OWNER, rows=rows)
    for n, execution in enumerate(runs):
        assert_written_once(execution, n)


def test_a_run_that_reaches_a_side_effect_leaves_the_batch_before_it(workspace):
    pure = make_agent(workspace, "three", "workflow", THREE_STEPS)
    sleepy = make_agent(
        workspace,
        "sleepy",
        "workflow",
        {"main": [{"evaluate": {"a": "$ 1"}}, {"sleep": {"seconds": 0.01}}, {"return": "$ 2"}]},
    )
    first = start(pure, {"n": 1})
    second = start(sleepy, {})
    leftover = batch.run_batch(claim_all(2), owner=OWNER)
    assert [e.pk for e, _ in leftover] == [second.pk]
    # Nothing of it was written: not even its first (pure) step or its start.
    row = Execution.objects.get(pk=second.pk)
    assert (row.status, row.transition_count) == (Status.PENDING, 1)
    for execution, rows in leftover:
        runner.run_claimed(execution, owner=OWNER, rows=rows)
    row.refresh_from_db()
    assert row.status == Status.COMPLETED
    assert steps(row) == ["main[0]", "main[1]", "main[2]"]
    assert_written_once(first, 1)


def test_leases_are_renewed_while_the_runs_hold_every_pooled_connection(workspace):
    """1,000 runs waiting on a model can hold every connection of the pool: renewal and the
    cancel poll use a connection of their own, so no lease is lost to the wait."""
    from django.db import connection

    from executions.engine.worker import Worker

    if connection.vendor != "postgresql" or not connection.pool:
        pytest.skip("a connection pool is a PostgreSQL setting")
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 1})
    worker = Worker(name="renewer", maintenance=False)
    claimed = queue.claim(owner=worker.owner, limit=10)
    assert [e.pk for e in claimed] == [execution.pk]
    worker.hold(str(execution.pk))
    before = Execution.objects.get(pk=execution.pk).lease_expires_at
    connection.close()  # this thread's own back to the pool, then every one taken
    pool = connection.pool
    taken = []
    try:
        while True:
            try:
                taken.append(pool.getconn(timeout=0.2))
            except Exception:  # noqa: BLE001 - PoolTimeout: the pool is empty
                break
        assert worker.renew_leases() == 1
        worker.poll_held()
        assert worker.stop_reason(str(execution.pk)) is None
    finally:
        for conn in taken:
            pool.putconn(conn)
        worker._keeper.close()
    assert Execution.objects.get(pk=execution.pk).lease_expires_at >= before
