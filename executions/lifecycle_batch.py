"""The engine's group commit: `append_many` for many leased runs at once, in one transaction.

Beside lifecycle.py and part of it (its helpers, its table of moves, its `Pending`): the status
is still written only by the lifecycle, here for a batch with one compare-and-set UPDATE
(bulk.update_many) instead of one per run. Split out to keep lifecycle.py readable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connection, transaction
from django.db.models import Model
from django.utils import timezone

from executions import bulk, rollups
from executions.lifecycle import (
    _ON_END,
    SYSTEM,
    TERMINAL,
    Actor,
    Pending,
    Status,
    _move_fields,
    _refresh,
    can_move,
    transition_rows,
)
from executions.live import events
from executions.models import Execution, Transition


def append_batch(
    batch: list[Pending],
    *,
    actor: Actor = SYSTEM,
    more: Callable[[list[Pending]], list[Model]] | None = None,
) -> list[Pending]:
    """Group commit: `append_many` for many executions at once, in the caller's transaction,
    with one compare-and-set UPDATE for all of them (bulk.update_many, RETURNING the ids that
    matched), one INSERT of the winners' entries, and their rollups together. Returns the
    Pendings that won; one that lost (cancelled meanwhile, its lease taken, a comment landed)
    wrote nothing and is left to the caller (the engine retries it through `append_many`,
    which re-reads and retries or refuses). Events go out after commit, in one hand-over per
    batch (live.events.transitions_committed).

    The rows must be as the caller last saw them (the engine's claim): each one's moves are
    checked against the table from that status, and its compare-and-set is on that status,
    that history length and the guard.

    `more(won)`, if given, returns new rows (the winners' events) to insert in the same
    statement as their entries (bulk.insert_groups: one round trip for both)."""
    now = timezone.now()
    plans = _plans(batch, now)
    if not plans:
        return []
    won: set[Any] = set()
    # One statement per shape of update (in practice one: every run's end sets the same
    # columns); a shape's columns are the union, a row lacking one keeps its current value.
    shapes: dict[tuple[str, ...], list] = {}
    for plan in plans:
        shapes.setdefault(tuple(sorted(plan[3])), []).append(plan)
    for columns, group in shapes.items():
        won.update(bulk.update_many(Execution, [_cas_row(plan) for plan in group], **_cas(columns)))
    done = [plan for plan in plans if plan[0].execution.pk in won]
    steps = [
        row
        for pending, _, moves, _ in done
        for row in transition_rows(
            pending.execution.pk,
            pending.execution.transition_count + 1,
            pending.entries,
            moves,
            actor=actor,
            now=now,
        )
    ]
    bulk.insert_groups([steps, more([plan[0] for plan in done]) if more else []])
    published: list[tuple[Execution, list[Transition]]] = []
    ended: list[tuple[Execution, str, Any, dict[str, Any]]] = []
    at = 0
    for pending, src, moves, updates in done:
        execution = pending.execution
        own, at = steps[at : at + len(moves)], at + len(moves)
        to = moves[-1][1] if moves[-1][1] != src else None
        created_at = execution.created_at
        _refresh(execution, src_row=execution, to=to, seq=own[-1].seq, now=now, updates=updates)
        published.append((execution, own))
        if to in TERMINAL:
            ended.append((execution, to, created_at, updates))
            if src == Status.AWAITING_APPROVAL:
                for callback in _ON_END:
                    callback(execution)
    rollups.count_ended_many(ended)
    transaction.on_commit(lambda: events.transitions_committed(published))
    return [plan[0] for plan in done]


def append_alone(
    pending: Pending, *, actor: Actor = SYSTEM, more: list[Model] = (), publish_more: bool = False
) -> bool:
    """`append_batch` for ONE leased run's end as ONE autocommitted statement (PostgreSQL,
    outside any transaction): its compare-and-set UPDATE, then — only if it matched — its
    entries, `more` (its events, built beforehand), its rollup and its duration bucket, as
    data-modifying CTEs of one statement, which is its own transaction: all of it commits,
    flushed, or none does. One round trip where BEGIN, UPDATE, INSERT, two upserts and COMMIT
    took six (an idle run's latency, docs/performance-history.md "Engine"). Events are published
    once it returns (committed). False: the compare-and-set lost, nothing was written.

    Only for a run whose end does nothing else in the database (no parent to wake, not
    leaving an approval: those callbacks write), which the caller checks."""
    now = timezone.now()
    plans = _plans([pending], now)
    if not plans:
        return False
    plan = plans[0]
    _, src, moves, updates = plan
    execution = pending.execution
    if src == Status.AWAITING_APPROVAL:
        raise ValueError("append_alone: a run leaving an approval has end callbacks")
    steps = transition_rows(
        execution.pk, execution.transition_count + 1, pending.entries, moves, actor=actor, now=now
    )
    to = moves[-1][1] if moves[-1][1] != src else None
    values, update, params = bulk.update_many_sql(
        Execution, [_cas_row(plan)], **_cas(tuple(sorted(updates)))
    )
    ctes = [values, f"won AS ({update})"]
    won = "EXISTS (SELECT 1 FROM won)"
    picks = ["SELECT 0, NULL::bigint FROM won"]
    groups = [objs for objs in (steps, list(more)) if objs]
    for i, objs in enumerate(groups):
        sql, part, _ = bulk.insert_where_sql(objs, where=won)
        ctes.append(f"g{i} AS ({sql})")
        params += part
        picks.append(f"SELECT {i + 1}, id FROM g{i}")
    if to in TERMINAL:
        ended = [(execution, to, execution.created_at, updates)]
        for j, (sql, part) in enumerate(rollups.upserts_sql(*rollups.ended_sums(ended), where=won)):
            ctes.append(f"r{j} AS ({sql})")
            params += part
    with bulk.prepared_cursor() as cursor:  # the same text for every idle run
        cursor.execute(f"WITH {', '.join(ctes)} {' UNION ALL '.join(picks)}", params)
        found = cursor.fetchall()
    if not any(group == 0 for group, _ in found):
        return False
    for i, objs in enumerate(groups):
        # Each group's ids in the order its rows were inserted (ORDER BY, one sequence).
        ids = sorted(pk for group, pk in found if group == i + 1)
        for obj, pk in zip(objs, ids, strict=True):
            obj.pk = pk
            obj._state.adding = False
            obj._state.db = connection.alias
    _refresh(execution, src_row=execution, to=to, seq=steps[-1].seq, now=now, updates=updates)
    if publish_more and more:  # its events in the same hand-over: one pipeline per write
        events.transitions_committed([(execution, steps)], stored=list(more))
    else:
        events.transitions_committed([(execution, steps)])
    return True


Plan = tuple[Pending, str, list[tuple[str, str]], dict[str, Any]]


def _plans(batch: list[Pending], now: Any) -> list[Plan]:
    """Each run's moves, checked against the table from the status it was claimed in, and the
    columns its end sets; a run whose entries cannot move from there is left out."""
    if any(set(pending.guard) != {"lease_owner"} for pending in batch):
        raise ValueError("append_batch writes leased runs: each guard is {'lease_owner': …}")
    plans: list[tuple[Pending, str, list[tuple[str, str]], dict[str, Any]]] = []
    for pending in batch:
        current = pending.execution
        src = status = current.status
        moves = []
        for entry in pending.entries:
            to = entry.get("to")
            if (to is not None and not can_move(status, to)) or (to is None and status in TERMINAL):
                break
            moves.append((status, to or status))
            status = to or status
        else:
            updates: dict[str, Any] = {**pending.fields, "updated_at": now}
            if status != src:
                _move_fields(current, status, now, updates)
                if status in TERMINAL and current.started_at is None:
                    updates.setdefault("started_at", now)
            plans.append((pending, src, moves, updates))
    return plans


def _cas_row(plan: Plan) -> dict[str, Any]:
    """A run's row of the compare-and-set UPDATE (bulk.update_many): its new columns, and the
    status, history length and lease it was claimed with."""
    pending, src, moves, updates = plan
    row = {f"set_{name}": value for name, value in updates.items()}
    row.update(
        {
            "id": pending.execution.pk,
            "src": src,
            "seen": pending.execution.transition_count,
            "owner": pending.guard.get("lease_owner", ""),
            "added": len(pending.entries),
            "set_status": moves[-1][1],
        }
    )
    return row


def _cas(columns: tuple[str, ...]) -> dict[str, Any]:
    return {
        "match": {"id": "id", "status": "src", "transition_count": "seen", "lease_owner": "owner"},
        "set_": {name: f"set_{name}" for name in (*columns, "status")},
        "add": {"transition_count": "added"},
    }
