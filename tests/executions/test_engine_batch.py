"""Group commit (engine/batch.py): a claimed batch of pure runs is computed on one thread and
written in one transaction. A run cancelled between its claim and the batch's write is not
written (and the others are); a batch that cannot be written leaves nothing behind and its
runs finish alone, each once; a run that reaches a side effect leaves the batch before it
does anything and finishes on a thread."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext

from executions import bulk, lifecycle, rollups
from executions.engine import batch, queue, runner
from executions.lifecycle import Status
from executions.models import Execution, ExecutionEvent, ExecutionRollup, Transition

from .engine_helpers import THREE_STEPS, make_agent, start, steps

pytestmark = [pytest.mark.django_db(transaction=True)]

OWNER = "batch-test"


def claim_all(count: int) -> list[Execution]:
    claimed = queue.claim(owner=OWNER, limit=100)
    assert len(claimed) == count
    return claimed


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


def test_an_idle_batch_inserts_its_entries_and_events_in_one_statement(workspace):
    """One run claimed alone (an idle worker): its transitions and events go in ONE INSERT
    statement on PostgreSQL (bulk.insert_groups), and each object gets its own row's id."""
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    execution = start(agent, {"n": 3})
    written: list = []
    real = bulk.insert_groups

    def spy(groups):
        written.extend(obj for objs in groups for obj in objs)
        return real(groups)

    with CaptureQueriesContext(connection) as captured, pytest.MonkeyPatch.context() as patch:
        patch.setattr(bulk, "insert_groups", spy)
        assert batch.run_batch(claim_all(1), owner=OWNER) == []
    assert_written_once(execution, 3)
    inserts = [q["sql"] for q in captured.captured_queries if "INSERT" in q["sql"]]
    touching = [sql for sql in inserts if "executions_transition" in sql]
    if connection.vendor == "postgresql":
        assert len(touching) == 1 and "executions_executionevent" in touching[0]
    rows = {(type(obj), obj.pk) for obj in written}
    assert len(rows) == len(written) == execution.transition_count - 1 + 2  # all but init
    for obj in written:
        stored = type(obj).objects.get(pk=obj.pk)
        assert stored.execution_id == execution.pk
        assert getattr(stored, "seq", None) == getattr(obj, "seq", None)
        assert stored.type == obj.type


def test_a_run_cancelled_before_the_batch_write_is_not_written_and_the_others_are(workspace):
    agent = make_agent(workspace, "three", "workflow", THREE_STEPS)
    runs = [start(agent, {"n": n}) for n in range(4)]
    claimed = claim_all(4)
    victim = runs[2]
    # Cancelled by someone while the batch computes (after the claim, before the write).
    original = batch.write

    def write_after_a_cancel(ready):
        row = Execution.objects.get(pk=victim.pk)
        lifecycle.transition(row, Status.CANCELLED, type="cancelled", message="stop")
        return original(ready)

    batch.write = write_after_a_cancel
    try:
        leftover = batch.run_batch(claimed, owner=OWNER)
    finally:
        batch.write = original
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
