"""The engine's group commit: `append_many` for many leased runs at once, in one transaction.

Beside lifecycle.py and part of it (its helpers, its table of moves, its `Pending`): the status
is still written only by the lifecycle, here for a batch with one compare-and-set UPDATE
(bulk.update_many) instead of one per run. Split out to keep lifecycle.py readable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import transaction
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
    if any(set(pending.guard) != {"lease_owner"} for pending in batch):
        raise ValueError("append_batch writes leased runs: each guard is {'lease_owner': …}")
    now = timezone.now()
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
    if not plans:
        return []
    won: set[Any] = set()
    # One statement per shape of update (in practice one: every run's end sets the same
    # columns); a shape's columns are the union, a row lacking one keeps its current value.
    shapes: dict[tuple[str, ...], list] = {}
    for plan in plans:
        shapes.setdefault(tuple(sorted(plan[3])), []).append(plan)
    for columns, group in shapes.items():
        rows = []
        for pending, src, moves, updates in group:
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
            rows.append(row)
        won.update(
            bulk.update_many(
                Execution,
                rows,
                match={
                    "id": "id",
                    "status": "src",
                    "transition_count": "seen",
                    "lease_owner": "owner",
                },
                set_={name: f"set_{name}" for name in (*columns, "status")},
                add={"transition_count": "added"},
            )
        )
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
