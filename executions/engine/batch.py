"""Group commit: a claimed batch of runs whose remaining steps are pure (evaluate, set, return,
if, …) is computed on the claiming thread and written in ONE transaction, then published in
one hand-over (docs/decisions.md, "Engine"; docs/performance-history.md, "Engine").

Each workflow run of the batch is tried in pure-only mode (RunContext.pure_only): its steps
run as usual, but anything that is not pure — a model or tool call, an approval, input, a
sleep, a child, an event sent mid-run — raises NeedsThread *before* it does anything, and the
run goes to a thread of its own, where it runs from its last record as any claimed run does
(its pure steps are simply computed again: pure means that is harmless). So nothing with a
side effect ever runs here, and the durability rule is the one of a single run: a side
effect is recorded before anything depends on it. A batch writes runs' ends, and the starts
of fresh runs that stopped before their first side effect (`start_together`: the write their
threads would make first, made for all of them at once).

The write (lifecycle_batch.append_batch): one compare-and-set UPDATE for every run (RETURNING the
ids that matched), one INSERT of the winners' transitions and events (one statement on
PostgreSQL), their rollups, one COMMIT. A run whose compare-and-set lost (cancelled
meanwhile, its lease taken, a comment landed) wrote nothing; it goes to a thread too, whose
write re-reads the row and either retries (a comment) or stops (cancelled, lease lost) as a
single run does.
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

from django.db import DatabaseError, connection, transaction

from executions import lifecycle_batch
from executions.engine import runner, writes
from executions.engine.context import NeedsThread, RunContext
from executions.engine.records import REPLAY_COLUMNS, StartedRows
from executions.lifecycle import Status
from executions.live import events
from executions.models import AgentType, Execution, ExecutionEvent

logger = logging.getLogger("steward.worker")


def run_batch(
    executions: list[Execution], *, owner: str, worker: Any = None
) -> list[tuple[Execution, list | None]]:
    """Run the claimed `executions` that are pure to their end here and write them at once.
    Returns the others, each with the records already read for it (or None), for threads."""
    leftover: list[tuple[Execution, list | None]] = []
    ready: list[RunContext] = []
    starting: list[RunContext] = []
    for execution in executions:
        ctx = _try(execution, owner=owner, worker=worker)
        if ctx is not None and ctx.collected is not None:
            ready.append(ctx)
        elif ctx is not None and ctx.needs_thread and ctx.start_deferred:
            starting.append(ctx)
        else:
            leftover.append((execution, ctx.rows if ctx is not None else None))
    if ready:
        leftover.extend(write(ready))
    if len(starting) > 1:
        leftover.extend(start_together(starting))
    else:  # one start: its thread writes it in one statement (writes.write_alone)
        leftover.extend((ctx.execution, ctx.rows) for ctx in starting)
    return leftover


def run_token(execution: Execution, *, worker: Any = None) -> bool:
    """A fresh run as its wake-up token carried it (engine/tokens.py), never claimed: if it is
    pure to its end, computed here and written as ONE compare-and-set from "pending, no lease,
    as created" to its end (the guard of an empty lease owner). True if written; False if it
    needs a thread or the row is no longer as the token had it — then it is claimed from the
    table as any run (the compare-and-set lost: nothing was written)."""
    ctx = _try(execution, owner="", worker=worker)
    if ctx is None or ctx.collected is None or not _alone([ctx]):
        return False
    return not _write_alone(ctx, copy.copy(execution), how="token")


def _try(execution: Execution, *, owner: str, worker: Any) -> RunContext | None:
    if execution.status not in (Status.PENDING, Status.RUNNING):
        return None  # the runner releases it
    ctx = None
    try:
        runner._attach(execution)
        if execution.agent.type != AgentType.WORKFLOW:
            return None  # agents start with a model call; Python agents run arbitrary code
        ctx = runner.context_for(execution, owner=owner, worker=worker, pure_only=True)
        runner.finish(ctx, runner.execute(ctx))
    except (KeyboardInterrupt, SystemExit):
        raise
    except NeedsThread:
        # Stopped before its first step that is not pure: nothing done but pure steps.
        if ctx is not None:
            ctx.collected = None
            ctx.needs_thread = True
        return ctx
    except BaseException:  # noqa: BLE001 - NeedsThread, a failure, a stop: the runner's case
        if ctx is not None:
            ctx.collected = None
        return ctx
    return ctx


def write(ready: list[RunContext]) -> list[tuple[Execution, list | None]]:
    """One transaction for the ends of `ready`; returns those that must go to a thread."""
    # As claimed: the rows a thread runs from if the batch cannot be written (the write keeps
    # the winners' objects in step with their rows, as append_many does).
    claimed = {ctx.execution.pk: copy.copy(ctx.execution) for ctx in ready}
    if _alone(ready):
        return _write_alone(ready[0], claimed[ready[0].execution.pk])
    won_ids = _append(ready)
    if won_ids is None:
        return [(claimed[ctx.execution.pk], ctx.rows) for ctx in ready]
    out = []
    for ctx in ready:
        if ctx.execution.pk in won_ids:
            ctx.lease_released = True
            if ctx.lost_worker:
                runner.log_lost_worker(ctx.execution.pk)
            runner._log(ctx.execution, Status.RUNNING, ctx.execution.status, "batch")
        else:
            out.append((ctx.execution, ctx.rows))
    return out


def start_together(starting: list[RunContext]) -> list[tuple[Execution, list | None]]:
    """Fresh runs of a claim that stopped before their first side effect (a model call, a
    tool, an approval…): their starts, with the pure steps before it, written in ONE
    transaction and published in one hand-over, instead of one write and one publish per
    run on its thread — the write each thread would make first (RunContext.before_effect).
    Each then goes to a thread with the steps written (StartedRows), running under its
    lease; one whose compare-and-set lost (cancelled meanwhile) goes as claimed, and its
    thread finds out as any run does. Nothing with a side effect runs here."""
    claimed = {ctx.execution.pk: copy.copy(ctx.execution) for ctx in starting}
    for ctx in starting:
        ctx.collected = ctx.held_start()
    won_ids = _append(starting)
    if won_ids is None:
        return [(claimed[ctx.execution.pk], None) for ctx in starting]
    written_at = time.monotonic()
    out: list[tuple[Execution, list | None]] = []
    for ctx in starting:
        if ctx.execution.pk not in won_ids:
            out.append((claimed[ctx.execution.pk], None))
            continue
        assert ctx.collected is not None
        rows = [_step_row(entry) for entry in ctx.collected.entries if entry["type"] == "step"]
        out.append((ctx.execution, StartedRows(rows, written_at)))
    return out


def _step_row(entry: dict[str, Any]) -> dict[str, Any]:
    """A step entry as RunContext replays it (the columns it reads back from the history)."""
    return {key: entry.get(key) for key in REPLAY_COLUMNS}


def _append(ready: list[RunContext]) -> set[Any] | None:
    """The writes collected on `ready` (each ctx.collected) in one transaction, their events
    inserted with their entries and published once committed. Returns the ids whose
    compare-and-set won, or None when nothing could be written (a deadlock, the database
    away): then each run goes to a thread and writes alone, as it would without batching."""
    batch = [ctx.collected for ctx in ready]
    assert all(pending is not None for pending in batch)
    stored: list[ExecutionEvent] = []

    def events_of(won: list[Any]) -> list[ExecutionEvent]:
        """The winners' own events (their start, their end) and what their end does (waking a
        parent), inserted with their entries in one statement (append_batch's `more`)."""
        won_ids = {pending.execution.pk for pending in won}
        for ctx in ready:
            if ctx.execution.pk not in won_ids:
                continue
            pending = ctx.collected
            ctx._event_batch = []
            try:
                for type, data in pending.events:
                    ctx.emit(type, data)
                if pending.then is not None:
                    pending.then()
                stored.extend(ctx._event_batch)
            finally:
                ctx._event_batch = None
        return stored

    try:
        with transaction.atomic():
            won = lifecycle_batch.append_batch(batch, more=events_of)  # type: ignore[arg-type]
            if stored:
                transaction.on_commit(lambda: events.stream_events(stored))
    except DatabaseError:
        logger.warning("a batch of %d runs could not be written at once", len(ready), exc_info=True)
        return None
    return {pending.execution.pk for pending in won}


def _alone(ready: list[RunContext]) -> bool:
    """A claim of one run (an idle worker's) whose end writes nothing but its own rows: no
    parent to wake (its `then` only builds its `done` event then). On PostgreSQL outside a
    transaction it is written as ONE autocommitted statement (lifecycle_batch.append_alone)."""
    return (
        len(ready) == 1
        and ready[0].execution.parent_id is None
        and connection.vendor == "postgresql"
        and not connection.in_atomic_block
    )


def _write_alone(
    ctx: RunContext, claimed: Execution, *, how: str = "batch"
) -> list[tuple[Execution, list | None]]:
    """`write` for one run, in one statement: its events are built before it (they are only
    inserted if its compare-and-set matches) and published with its entries, committed."""
    pending = ctx.collected
    assert pending is not None
    # Its events and `then`'s `done` (no parent, checked: no write) as unsaved rows.
    stored = writes.collect_events(ctx, pending.events, pending.then)
    try:
        # Its events published with its entries: one Redis pipeline for the end, not two.
        won = lifecycle_batch.append_alone(pending, more=stored, publish_more=True)
    except DatabaseError:
        logger.warning("a run's end could not be written in one statement", exc_info=True)
        return [(claimed, ctx.rows)]
    if not won:
        return [(ctx.execution, ctx.rows)]
    ctx.lease_released = True
    if ctx.lost_worker:
        runner.log_lost_worker(ctx.execution.pk)
    runner._log(ctx.execution, Status.RUNNING, ctx.execution.status, how)
    return []
