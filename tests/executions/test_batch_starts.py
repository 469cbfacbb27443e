"""A claim's fresh runs that stop before their first side effect (a model call) have their
starts written together (engine/batch.py, start_together): one transaction and one publish
for the claim, not one write and one publish per run on its thread. Each run then makes its
model call exactly once on its thread, from the records written, and ends as a run started
on its own thread does."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions import lifecycle
from executions.engine import batch, queue, runner
from executions.engine.records import StartedRows
from executions.lifecycle import Status
from executions.models import Execution, ExecutionEvent

from .engine_helpers import make_agent, start, steps
from .llm_servers import OpenAIServer

pytestmark = [pytest.mark.django_db(transaction=True)]

OWNER = "starts-test"
PROMPT_AFTER_PURE = {"main": [{"evaluate": {"x": "$ 21 * 2"}}, {"prompt": "hi", "unwrap": True}]}


def prompt_agent(workspace, server):
    model = {"provider": "openai", "name": "gpt-4o-mini", "base_url": server.base_url}
    return make_agent(workspace, "prompting", "workflow", {"model": model, **PROMPT_AFTER_PURE})


def writes_of(captured) -> list[str]:
    return [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].lstrip().upper().startswith(("UPDATE", "INSERT", "WITH"))
    ]


def test_fresh_model_runs_start_together_then_call_once_each(workspace):
    with OpenAIServer([{"content": "ok"}]) as server:
        agent = prompt_agent(workspace, server)
        runs = [start(agent, {"n": n}) for n in range(4)]
        claimed = queue.claim(owner=OWNER, limit=10)
        with CaptureQueriesContext(connection) as captured:
            leftover = batch.run_batch(claimed, owner=OWNER)
        # No model call yet: the batch only wrote the starts and the pure step before it.
        assert server.requests == []
        # One UPDATE for the four compare-and-sets, one INSERT of entries and events (on
        # SQLite the entries and events are two), not a write per run.
        assert len(writes_of(captured)) <= 3
        assert sorted(e.pk for e, _ in leftover) == sorted(e.pk for e in runs)
        for execution, rows in leftover:
            assert isinstance(rows, StartedRows)
            assert [row["step_path"] for row in rows] == ["main[0]"]
            assert execution.status == Status.RUNNING  # the object follows its row
            row = Execution.objects.get(pk=execution.pk)
            assert (row.status, row.lease_owner) == (Status.RUNNING, OWNER)
            assert row.started_at is not None
            # Shown running at once: its start event is out with the others'.
            types = ExecutionEvent.objects.filter(execution=row).values_list("type", flat=True)
            assert list(types) == ["execution"]
        for execution, rows in leftover:
            runner.run_claimed(execution, owner=OWNER, rows=rows)
        assert len(server.requests) == 4  # one model call per run, none repeated
    for execution in runs:
        execution.refresh_from_db()
        assert execution.status == Status.COMPLETED
        assert execution.output == "ok"  # the last step's output (unwrapped reply)
        assert execution.lease_owner == ""
        assert steps(execution) == ["main[0]", "main[1]"]  # the pure step recorded once
        seqs = list(execution.transitions.order_by("seq").values_list("seq", flat=True))
        assert seqs == list(range(1, execution.transition_count + 1))
        types = list(execution.transitions.order_by("seq").values_list("type", flat=True))
        assert types == ["init", "start", "step", "step", "finish"]
        events = ExecutionEvent.objects.filter(execution=execution).values_list("type", flat=True)
        assert list(events)[0] == "execution" and list(events)[-1] == "done"


def test_a_run_started_by_its_batch_is_not_a_lost_worker(workspace, caplog):
    with OpenAIServer([{"content": "ok"}]) as server:
        agent = prompt_agent(workspace, server)
        for n in range(2):
            start(agent, {"n": n})
        leftover = batch.run_batch(queue.claim(owner=OWNER, limit=10), owner=OWNER)
        with caplog.at_level("WARNING", logger="steward.worker"):
            for execution, rows in leftover:
                runner.run_claimed(execution, owner=OWNER, rows=rows)
    assert "lost its worker" not in caplog.text
    for execution, _ in leftover:
        execution.refresh_from_db()
        assert execution.status == Status.COMPLETED
        assert "downtime_seconds" not in (execution.state or {})


def test_a_run_cancelled_before_the_starts_are_written_makes_no_call(workspace, monkeypatch):
    with OpenAIServer([{"content": "ok"}]) as server:
        agent = prompt_agent(workspace, server)
        first, second, third = (start(agent, {"n": n}) for n in range(3))
        claimed = queue.claim(owner=OWNER, limit=10)
        original = batch.start_together

        def cancel_then_start(starting):
            row = Execution.objects.get(pk=second.pk)
            lifecycle.transition(row, Status.CANCELLED, type="cancelled", message="stop")
            return original(starting)

        monkeypatch.setattr(batch, "start_together", cancel_then_start)
        leftover = batch.run_batch(claimed, owner=OWNER)
        handed = {execution.pk: rows for execution, rows in leftover}
        # Its compare-and-set lost: handed on as claimed, nothing written for it.
        assert handed[second.pk] is None
        assert isinstance(handed[first.pk], StartedRows)
        for execution, rows in leftover:
            runner.run_claimed(execution, owner=OWNER, rows=rows)
        assert len(server.requests) == 2
    second.refresh_from_db()
    assert second.status == Status.CANCELLED
    assert steps(second) == []
    for execution in (first, third):
        execution.refresh_from_db()
        assert execution.status == Status.COMPLETED


def test_a_lone_fresh_model_run_is_left_to_its_thread(workspace):
    """One such run in a claim (an idle worker's): its thread writes its start in one
    statement, cheaper than a batch's transaction."""
    with OpenAIServer([{"content": "ok"}]) as server:
        agent = prompt_agent(workspace, server)
        execution = start(agent, {})
        [(handed, rows)] = batch.run_batch(queue.claim(owner=OWNER, limit=10), owner=OWNER)
        assert handed.pk == execution.pk and not isinstance(rows, StartedRows)
        assert Execution.objects.get(pk=execution.pk).status == Status.PENDING
        runner.run_claimed(handed, owner=OWNER, rows=rows)
    execution.refresh_from_db()
    assert execution.status == Status.COMPLETED
