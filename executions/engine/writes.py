"""A run thread's write (its start, its end, a held model record) as ONE autocommitted statement
on PostgreSQL, where the thread would otherwise open a transaction for a compare-and-set
UPDATE, an INSERT of its entries, an INSERT of its events, the rollups, and COMMIT.

The statement is the batch's (lifecycle_batch.append_alone): the compare-and-set of the row
and, only if it matched, the entries, the events, the rollup and the duration bucket as CTEs.
It is its own transaction: it commits whole, flushed, or not at all, so the durability rule
is unchanged (a model call's record commits before anything that depends on it leaves the
process; events are published only after the statement returned). Why: a model run spent
most of its worker CPU building and sending those statements one by one
(docs/performance-history.md, "Runs in flight"); one prepared statement is one round trip and
no ORM compilation.

Only where nothing else must happen in the same transaction: PostgreSQL, outside a caller's
transaction (a tool's record runs inside its own), no parent to wake at the end (its wake-up
is a write), a leased run that is pending or running. Anything else — and a compare-and-set
that lost (a comment landed, a cancel) — goes through lifecycle.append_many as before, which
re-reads the row and retries or refuses.
"""

from __future__ import annotations

from typing import Any

from django.db import connection

from executions import lifecycle_batch
from executions.lifecycle import Pending, Status
from executions.models import ExecutionEvent


def usable(ctx: Any, then: Any) -> bool:
    """Whether `ctx`'s next write may be the one statement."""
    execution = ctx.execution
    return (
        connection.vendor == "postgresql"
        and not connection.in_atomic_block
        and execution.status in (Status.PENDING, Status.RUNNING)
        and (then is None or execution.parent_id is None)
    )


def write_alone(
    ctx: Any,
    entries: list[dict[str, Any]],
    fields: dict[str, Any],
    events: list[tuple[str, dict[str, Any]]],
    then: Any,
) -> bool:
    """Write `entries` with `fields` and the run's `events` (then `then`'s: its `done`) in one
    statement; publish them once it returned, in one hand-over. False: the compare-and-set
    lost, nothing was written (the caller writes through append_many, which finds out why)."""
    stored = collect_events(ctx, events, then)
    pending = Pending(ctx.execution, entries, fields, ctx.guard)
    # Its entries and its events published in one hand-over (one Redis pipeline) once it
    # returned: a model run's two writes cost two pipelines, not four.
    return lifecycle_batch.append_alone(pending, more=stored, publish_more=True)


def collect_events(
    ctx: Any, events: list[tuple[str, dict[str, Any]]], then: Any
) -> list[ExecutionEvent]:
    """The events as unsaved rows, in order, for a one-statement write to insert (`then` only
    emits: no parent, checked). Shared with the batch's lone run (engine/batch.py)."""
    ctx._event_batch = []
    try:
        for type, data in events:
            ctx.emit(type, data)
        if then is not None:
            then()
        return ctx._event_batch
    finally:
        ctx._event_batch = None
