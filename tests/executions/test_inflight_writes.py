"""A model run's writes on its thread as ONE autocommitted statement each (engine/writes.py,
ENGINE-INFLIGHT, issue 10): on PostgreSQL a one-prompt run writes its start in one statement
and its end (the held model record, its content event, `done`, the rollups) in another; a
compare-and-set that loses falls back to the transaction path, which retries (a comment
landed) or stops (cancelled); a child's end (a parent to wake) keeps the transaction."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions import lifecycle
from executions.engine import runner, writes
from executions.lifecycle import Status
from executions.live import events
from executions.models import Execution, ExecutionEvent, ExecutionRollup, Transition

from .engine_helpers import make_agent, prompt_workflow, start, steps
from .llm_servers import OpenAIServer

pytestmark = [pytest.mark.django_db(transaction=True)]


def event_types(execution: Execution) -> list[str]:
    rows = ExecutionEvent.objects.filter(execution=execution).order_by("id")
    return list(rows.values_list("type", flat=True))


@contextmanager
def before_each_write(action):
    """Run `action(execution)` just before each of the run's writes (another writer racing):
    on PostgreSQL before its one statement, elsewhere before its transaction."""
    original = writes.usable

    def racing(ctx, then):
        action(ctx.execution)
        return original(ctx, then)

    writes.usable = racing
    try:
        yield
    finally:
        writes.usable = original


def test_a_model_runs_start_and_end_are_one_statement_each(workspace, monkeypatch):
    published: list = []
    hand_overs: list = []
    real_steps, real_send_many = events.transitions_committed, events.send_many

    def steps_spy(batch_, stored=()):
        published.extend((step.seq, step.type) for _, own in batch_ for step in own)
        published.extend(("event", e.type) for e in stored)
        real_steps(batch_, stored)

    def send_many_spy(items):
        hand_overs.append([message["type"] for _, message in items])
        real_send_many(items)

    monkeypatch.setattr(events, "transitions_committed", steps_spy)
    monkeypatch.setattr(events, "send_many", send_many_spy)
    with OpenAIServer([{"content": "Hello there."}]) as server:
        agent = make_agent(workspace, "one-prompt", "workflow", prompt_workflow(server.base_url))
        execution = start(agent, {})
        hand_overs.clear()  # the start's own (its `init`)
        with CaptureQueriesContext(connection) as captured:
            runner.run(execution.pk)
    execution.refresh_from_db()
    assert execution.status == Status.COMPLETED and execution.output == "Hello there."
    assert execution.lease_owner == "" and execution.duration_ms is not None
    assert steps(execution) == ["main[0]"]
    seqs = list(execution.transitions.order_by("seq").values_list("seq", "type"))
    assert seqs == [(1, "init"), (2, "start"), (3, "step"), (4, "finish")]
    assert event_types(execution) == ["execution", "content", "done"]
    rollup = ExecutionRollup.objects.filter(agent=agent, status="completed")
    assert sum(rollup.values_list("count", flat=True)) == 1
    if connection.vendor != "postgresql":
        return
    sql = [q["sql"] for q in captured.captured_queries]
    written = [s for s in sql if not s.startswith("SELECT")]
    # The claim (runner.run's claim_one), then the start and the end: one statement each, and
    # no transaction around them.
    assert not any(s.upper().startswith(("BEGIN", "COMMIT", "SAVEPOINT")) for s in sql)
    assert len(written) == 3, written
    start_sql, end_sql = written[1], written[2]
    for table in ("execution", "transition", "executionevent"):
        assert f"executions_{table}" in start_sql
    assert "executions_executionrollup" in end_sql
    # Each write published after it returned, in order, once: its entries and its events in
    # ONE hand-over (one Redis pipeline), the workspace's group told of each status move.
    changed, stream = "execution.changed", "execution.stream"
    assert hand_overs == [
        [changed, changed, stream],  # start: execution + workspace groups, `execution` event
        [changed, changed, stream, stream],  # end: the finish (and the step's seq), content, done
    ]
    assert published == [
        (2, "start"),
        ("event", "execution"),
        (3, "step"),
        (4, "finish"),
        ("event", "content"),
        ("event", "done"),
    ]


def test_a_comment_landing_before_the_start_falls_back_and_the_run_ends_once(workspace):
    """The one statement's compare-and-set loses (the history grew under it): nothing of it
    is written, and the transaction path re-reads the row and writes the start after it."""
    commented: list = []

    def comment(execution):
        if not commented:
            row = Execution.objects.get(pk=execution.pk)
            commented.append(lifecycle.record(row, type="comment", message="a note"))

    with OpenAIServer([{"content": "ok"}]) as server:
        agent = make_agent(workspace, "one-prompt", "workflow", prompt_workflow(server.base_url))
        execution = start(agent, {})
        with before_each_write(comment):
            runner.run(execution.pk)
    execution.refresh_from_db()
    assert execution.status == Status.COMPLETED
    types = list(execution.transitions.order_by("seq").values_list("type", flat=True))
    assert types == ["init", "comment", "start", "step", "finish"]
    assert event_types(execution) == ["execution", "content", "done"]


def test_a_run_cancelled_before_its_one_statement_start_writes_nothing(workspace):
    def cancel(execution):
        row = Execution.objects.get(pk=execution.pk)
        if row.status not in lifecycle.TERMINAL:
            lifecycle.transition(row, Status.CANCELLED, type="cancelled", message="stop")

    with OpenAIServer([{"content": "never asked"}]) as server:
        agent = make_agent(workspace, "one-prompt", "workflow", prompt_workflow(server.base_url))
        execution = start(agent, {})
        with before_each_write(cancel):
            runner.run(execution.pk)
        assert server.requests == []  # the model was never asked
    execution.refresh_from_db()
    assert execution.status == Status.CANCELLED
    assert not Transition.objects.filter(execution=execution, type__in=["start", "step"]).exists()
    assert event_types(execution) == []


def test_a_childs_end_wakes_its_parent_in_a_transaction():
    """A run with a parent is not written alone: its end's `then` writes (the parent's wake)."""

    class Ctx:
        execution = Execution(status=Status.RUNNING, parent_id=None)

    ctx = Ctx()
    expected = connection.vendor == "postgresql"
    assert writes.usable(ctx, then=None) is expected
    assert writes.usable(ctx, then=lambda: None) is expected
    ctx.execution.parent_id = Execution().pk  # any parent
    assert writes.usable(ctx, then=None) is expected  # a start or a held record: no wake
    assert writes.usable(ctx, then=lambda: None) is False
    ctx.execution.status = Status.AWAITING_APPROVAL
    assert writes.usable(ctx, then=None) is False
