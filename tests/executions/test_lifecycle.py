"""The lifecycle table, the compare-and-set, and the history it leaves."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from executions import lifecycle, services
from executions.lifecycle import ALL_STATUSES, ALLOWED, TERMINAL, IllegalTransition, Status
from executions.models import Execution, Transition

TYPE_FOR = {
    Status.RUNNING: "start",
    Status.AWAITING_APPROVAL: "wait",
    Status.AWAITING_INPUT: "wait",
    Status.COMPLETED: "finish",
    Status.FAILED: "error",
    Status.CANCELLED: "cancelled",
    Status.REJECTED: "rejected",
}

# A path of legal moves from pending to each status, to put an execution there.
PATH_TO = {
    Status.PENDING: [],
    Status.RUNNING: [Status.RUNNING],
    Status.AWAITING_APPROVAL: [Status.RUNNING, Status.AWAITING_APPROVAL],
    Status.AWAITING_INPUT: [Status.RUNNING, Status.AWAITING_INPUT],
    Status.COMPLETED: [Status.RUNNING, Status.COMPLETED],
    Status.FAILED: [Status.RUNNING, Status.FAILED],
    Status.CANCELLED: [Status.CANCELLED],
    Status.REJECTED: [Status.RUNNING, Status.AWAITING_APPROVAL, Status.REJECTED],
}


def new_execution(agent) -> Execution:
    execution, _ = services.execution_start(workspace=agent.workspace, agent=agent, input={"n": 1})
    return execution


def put_in(execution: Execution, status: str) -> Execution:
    for step in PATH_TO[status]:
        lifecycle.transition(execution, step, type=TYPE_FOR[step])
    return execution


MOVES = [(src, to) for src in ALL_STATUSES for to in ALL_STATUSES if src != to]


@pytest.mark.parametrize("src,to", MOVES, ids=[f"{s}->{t}" for s, t in MOVES])
def test_every_move_is_allowed_or_refused_by_the_table(agent, src, to):
    execution = put_in(new_execution(agent), src)
    count = execution.transition_count
    if to in ALLOWED[src]:
        step = lifecycle.transition(execution, to, type=TYPE_FOR.get(to, "x"))
        execution.refresh_from_db()
        assert execution.status == to
        assert step.from_status == src and step.to_status == to
        assert step.seq == count + 1 == execution.transition_count
    else:
        with pytest.raises(IllegalTransition):
            lifecycle.transition(execution, to, type=TYPE_FOR.get(to, "x"))
        execution.refresh_from_db()
        assert execution.status == src
        assert execution.transition_count == count


def test_a_new_execution_starts_pending_with_an_init_transition(agent):
    execution = new_execution(agent)
    steps = list(execution.transitions.all())
    assert execution.status == Status.PENDING
    assert [(s.seq, s.type, s.to_status) for s in steps] == [(1, "init", Status.PENDING)]


def test_timestamps_follow_the_moves(agent):
    execution = new_execution(agent)
    assert execution.started_at is None
    lifecycle.transition(execution, Status.RUNNING, type="start")
    execution.refresh_from_db()
    started = execution.started_at
    assert started is not None and execution.completed_at is None
    lifecycle.transition(execution, Status.AWAITING_INPUT, type="wait")
    lifecycle.transition(execution, Status.RUNNING, type="resume")
    execution.refresh_from_db()
    assert execution.started_at == started, "started_at is set on the first move to running only"
    lifecycle.transition(execution, Status.COMPLETED, type="finish", fields={"output": {"ok": 1}})
    execution.refresh_from_db()
    assert execution.completed_at >= started
    assert execution.duration_ms == int((execution.completed_at - started).total_seconds() * 1000)
    assert execution.output == {"ok": 1}


def test_terminal_statuses_never_change_and_refuse_records(agent):
    for status in TERMINAL:
        execution = put_in(new_execution(agent), status)
        for to in ALL_STATUSES:
            if to != status:
                with pytest.raises(IllegalTransition):
                    lifecycle.transition(execution, to, type="x")
        with pytest.raises(IllegalTransition):
            lifecycle.record(execution, type="step")


def test_record_appends_history_without_moving(agent):
    execution = put_in(new_execution(agent), Status.RUNNING)
    step = lifecycle.record(execution, type="step", step_path="main[0]", output={"a": 1})
    execution.refresh_from_db()
    assert execution.status == Status.RUNNING
    assert step.from_status == step.to_status == Status.RUNNING
    assert step.seq == execution.transition_count == 3


def test_a_stale_object_still_gets_the_next_seq(agent):
    execution = put_in(new_execution(agent), Status.RUNNING)
    stale = Execution.objects.get(pk=execution.pk)
    lifecycle.record(execution, type="step")
    step = lifecycle.record(stale, type="step")
    assert step.seq == 4
    assert list(execution.transitions.values_list("seq", flat=True)) == [1, 2, 3, 4]


class LifecycleMachine(RuleBasedStateMachine):
    """Random sequences of moves and records: the history is always legal and gap-free."""

    def __init__(self) -> None:
        super().__init__()
        from executions.models import Agent

        agent = Agent.objects.get(name="doubler")
        self.execution = new_execution(agent)
        self.expected_status = Status.PENDING

    @rule(to=st.sampled_from(ALL_STATUSES))
    def move(self, to: str) -> None:
        legal = to in ALLOWED[self.expected_status]
        try:
            lifecycle.transition(self.execution, to, type=TYPE_FOR.get(to, "x"))
        except IllegalTransition:
            assert not legal
        else:
            assert legal
            self.expected_status = to

    @rule()
    def record(self) -> None:
        try:
            lifecycle.record(self.execution, type="step")
        except IllegalTransition:
            assert self.expected_status in TERMINAL

    @rule()
    def stale_cancel(self) -> None:
        stale = Execution.objects.get(pk=self.execution.pk)
        try:
            services.execution_cancel(execution=stale, actor=lifecycle.SYSTEM)
        except IllegalTransition:
            assert self.expected_status in TERMINAL
        else:
            self.expected_status = Status.CANCELLED
            self.execution.refresh_from_db()

    @invariant()
    def history_is_legal_and_gap_free(self) -> None:
        row = Execution.objects.get(pk=self.execution.pk)
        assert row.status == self.expected_status
        steps = list(Transition.objects.filter(execution=row).order_by("seq"))
        assert [s.seq for s in steps] == list(range(1, len(steps) + 1))
        assert row.transition_count == len(steps)
        status = None
        for s in steps:
            if s.type == "init":
                status = s.to_status
                continue
            assert s.from_status == status
            if s.to_status != s.from_status:
                assert s.to_status in ALLOWED[s.from_status]
            status = s.to_status
        assert status == row.status


@pytest.mark.django_db
def test_random_operation_sequences_keep_the_history_legal(agent):
    LifecycleMachine.TestCase.settings = settings(
        max_examples=15,
        stateful_step_count=15,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    LifecycleMachine.TestCase().runTest()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
@pytest.mark.django_db(transaction=True)
def test_two_threads_deciding_at_once_exactly_one_wins(agent):
    for _ in range(10):
        execution = put_in(new_execution(agent), Status.AWAITING_APPROVAL)
        barrier = threading.Barrier(2)
        outcomes: list[str] = []

        def decide(to: str, execution_id=execution.pk, barrier=barrier, outcomes=outcomes) -> None:
            from django.db import connection as thread_connection

            mine = Execution.objects.get(pk=execution_id)
            barrier.wait()
            try:
                lifecycle.transition(mine, to, type=TYPE_FOR.get(to, "x"))
                outcomes.append(f"won:{to}")
            except IllegalTransition:
                outcomes.append("lost")
            finally:
                thread_connection.close()

        threads = [
            threading.Thread(target=decide, args=(Status.RUNNING,)),
            threading.Thread(target=decide, args=(Status.REJECTED,)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(o.split(":")[0] for o in outcomes) == ["lost", "won"]
        execution.refresh_from_db()
        winner = next(o.split(":")[1] for o in outcomes if o.startswith("won"))
        assert execution.status == winner
        assert execution.transition_count == 4


# --- rollups: stats read what the lifecycle counted as each run ended ------------------------


def raw_stats(workspace, since=None):
    from django.db.models import Count, Sum

    rows = Execution.objects.filter(workspace=workspace)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    counts = dict(rows.values_list("status").annotate(n=Count("id")).order_by())
    return {
        "by_status": {status: counts.get(status, 0) for status in ALL_STATUSES},
        "total": sum(counts.values()),
        "cost": rows.aggregate(cost=Sum("cost"))["cost"] or 0,
    }


def test_stats_from_rollups_equal_a_count_of_the_rows(agent):
    from datetime import timedelta
    from decimal import Decimal

    from django.utils import timezone

    from executions import selectors

    ended = []
    for status in (Status.COMPLETED, Status.COMPLETED, Status.FAILED, Status.CANCELLED):
        execution = new_execution(agent)
        for to in PATH_TO[status][:-1]:
            lifecycle.transition(execution, to, type=TYPE_FOR[to])
        lifecycle.transition(
            execution, status, type=TYPE_FOR[status], fields={"cost": Decimal("0.25")}
        )
        ended.append(execution)
    new_execution(agent)  # pending: counted live, not in a rollup
    parked = new_execution(agent)
    lifecycle.transition(parked, Status.RUNNING, type="start")
    # An execution from two hours ago: its hour is a whole rollup hour inside a 3-hour window.
    old = new_execution(agent)
    Execution.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(hours=2))
    old.refresh_from_db()
    lifecycle.transition(old, Status.CANCELLED, type="cancelled")

    workspace = agent.workspace
    for since in (None, timezone.now() - timedelta(hours=3), timezone.now() - timedelta(minutes=5)):
        got = selectors.execution_stats(workspace=workspace, since=since)
        want = raw_stats(workspace, since)
        assert got["by_status"] == want["by_status"]
        assert got["total"] == want["total"]
        assert Decimal(got["cost"]) == Decimal(want["cost"])
    assert selectors.execution_stats(workspace=workspace)["by_status"]["completed"] == 2

    hourly = selectors.execution_hourly(
        workspace=workspace, since=timezone.now() - timedelta(hours=24)
    )
    assert sum(row["n"] for row in hourly) == 7
    runs = selectors.agent_run_stats(
        workspace=workspace, since=timezone.now() - timedelta(hours=24)
    )
    assert runs[agent.pk]["runs"] == 7
    assert runs[agent.pk]["failed"] == 1
    assert runs[agent.pk]["last"] == Execution.objects.order_by("-id").first().created_at


def test_retention_takes_purged_runs_out_of_the_rollups(agent):
    from datetime import timedelta

    from django.utils import timezone

    from executions import selectors
    from executions.engine import retention

    workspace = agent.workspace
    workspace.retention_days = 1
    workspace.save(update_fields=["retention_days"])
    kept, purged = new_execution(agent), new_execution(agent)
    Execution.objects.filter(pk=purged.pk).update(created_at=timezone.now() - timedelta(days=3))
    purged.refresh_from_db()
    for execution in (kept, purged):
        put_in(execution, Status.COMPLETED)
    assert selectors.execution_stats(workspace=workspace)["by_status"]["completed"] == 2

    assert retention.purge()["executions"] == 1
    got, want = selectors.execution_stats(workspace=workspace), raw_stats(workspace)
    assert (got["by_status"], got["total"]) == (want["by_status"], want["total"])
    assert selectors.execution_stats(workspace=workspace)["by_status"]["completed"] == 1
