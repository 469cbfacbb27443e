"""Execution statuses, the moves allowed between them, and the one function that makes a move.

`transition()` is the ONLY writer of `Execution.status`; `record()` appends history without a
move (steps, logs, comments). Both take the next `seq` with a compare-and-set on the row, so two
racing callers cannot both succeed from the same observed state, and the event goes out only
after the transaction commits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from executions import bulk, rollups
from executions.live import events
from executions.models import TERMINAL_STATUSES, ActorType, ApiKey, Execution, Transition


class Status:
    PENDING = "pending"
    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    AWAITING_INPUT = "awaiting_input"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"


ALL_STATUSES = (
    Status.PENDING,
    Status.RUNNING,
    Status.AWAITING_APPROVAL,
    Status.AWAITING_INPUT,
    Status.COMPLETED,
    Status.FAILED,
    Status.CANCELLED,
    Status.REJECTED,
)
TERMINAL = TERMINAL_STATUSES
assert frozenset({Status.COMPLETED, Status.FAILED, Status.CANCELLED, Status.REJECTED}) == TERMINAL
PARKED = frozenset({Status.AWAITING_APPROVAL, Status.AWAITING_INPUT})
ACTIVE = frozenset(ALL_STATUSES) - TERMINAL

# The one table of allowed moves: from-status -> the statuses it may move to.
ALLOWED: dict[str, frozenset[str]] = {
    Status.PENDING: frozenset({Status.RUNNING, Status.CANCELLED, Status.FAILED}),
    Status.RUNNING: frozenset(
        {
            Status.COMPLETED,
            Status.FAILED,
            Status.AWAITING_APPROVAL,
            Status.AWAITING_INPUT,
            Status.CANCELLED,
        }
    ),
    # A rejection either ends the run or (when the step says so) continues down a branch.
    Status.AWAITING_APPROVAL: frozenset(
        {Status.RUNNING, Status.REJECTED, Status.CANCELLED, Status.FAILED}
    ),
    Status.AWAITING_INPUT: frozenset({Status.RUNNING, Status.CANCELLED, Status.FAILED}),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
    Status.REJECTED: frozenset(),
}


def allowed_from(to: str) -> frozenset[str]:
    return frozenset(src for src, targets in ALLOWED.items() if to in targets)


def can_move(src: str, to: str) -> bool:
    return to in ALLOWED.get(src, frozenset())


class GuardFailed(Exception):
    """The row no longer matches the caller's `guard` (e.g. the engine lost its lease)."""


class IllegalTransition(Exception):
    """The move is not allowed from the execution's current status (the API answers 409)."""

    def __init__(self, execution_id: Any, current: str, to: str | None, message: str = "") -> None:
        self.execution_id = execution_id
        self.current = current
        self.to = to
        super().__init__(
            message or f"execution {execution_id} is {current}; it cannot move to {to}"
        )


@dataclass(frozen=True)
class Actor:
    """Who caused a change: a user, an API key, or the system (engine, reaper, timers)."""

    type: str = ActorType.SYSTEM
    user: Any = None
    api_key: ApiKey | None = None
    label: str = "system"

    @classmethod
    def for_user(cls, user: Any) -> Actor:
        return cls(type=ActorType.USER, user=user, label=user.get_username())

    @classmethod
    def for_key(cls, key: ApiKey) -> Actor:
        return cls(type=ActorType.API_KEY, api_key=key, label=f"key:{key.name}")

    @property
    def user_id(self) -> Any:
        return getattr(self.user, "pk", None)

    @property
    def key_id(self) -> Any:
        return getattr(self.api_key, "pk", None)


SYSTEM = Actor()

# What other apps close when an execution ends (approvals registers its open approvals here
# from its AppConfig.ready). A registry instead of an import, because executions does not depend
# on approvals; the callbacks run inside the ending transition's transaction, so nothing tied
# to a run stays open after it.
_ON_END: list[Callable[[Execution], Any]] = []


def on_end(callback: Callable[[Execution], Any]) -> None:
    if callback not in _ON_END:
        _ON_END.append(callback)


# How many times a compare-and-set is retried when another writer moved the row first but the
# requested move is still legal from the new state (e.g. a step recorded while a comment lands).
_CAS_ATTEMPTS = 20


def transition(
    execution: Execution,
    to: str,
    *,
    type: str,
    actor: Actor = SYSTEM,
    fields: dict[str, Any] | None = None,
    guard: dict[str, Any] | None = None,
    **details: Any,
) -> Transition:
    """Move `execution` to `to`, append its Transition, and publish the change after commit.

    `fields` are other columns to set in the same UPDATE (output, error, usage…). `guard` adds
    conditions to the compare-and-set (the engine passes its lease owner, so a worker that lost
    its lease cannot write); when they no longer hold, GuardFailed is raised. Raises
    IllegalTransition when the move is not allowed from the current status.
    """
    if to not in ALLOWED:
        raise ValueError(f"unknown status {to!r}")
    return _append(
        execution,
        to=to,
        type=type,
        actor=actor,
        fields=fields or {},
        details=details,
        guard=guard or {},
    )


def record(
    execution: Execution,
    *,
    type: str,
    actor: Actor = SYSTEM,
    fields: dict[str, Any] | None = None,
    allow_terminal: bool = False,
    guard: dict[str, Any] | None = None,
    **details: Any,
) -> Transition:
    """Append a history entry that does not change the status (a step, a log line, a comment)."""
    return _append(
        execution,
        to=None,
        type=type,
        actor=actor,
        fields=fields or {},
        details=details,
        allow_terminal=allow_terminal,
        guard=guard or {},
    )


def _append(
    execution: Execution,
    *,
    to: str | None,
    type: str,
    actor: Actor,
    fields: dict[str, Any],
    details: dict[str, Any],
    allow_terminal: bool = False,
    guard: dict[str, Any] | None = None,
) -> Transition:
    guard = guard or {}
    with transaction.atomic():
        current = execution
        for _ in range(_CAS_ATTEMPTS):
            src = current.status
            if to is not None and not can_move(src, to):
                raise IllegalTransition(execution.pk, src, to)
            if to is None and src in TERMINAL and not allow_terminal:
                raise IllegalTransition(
                    execution.pk, src, None, f"execution {execution.pk} is already {src}"
                )
            now = timezone.now()
            updates: dict[str, Any] = {
                **fields,
                "transition_count": F("transition_count") + 1,
                "updated_at": now,
            }
            if to is not None:
                _move_fields(current, to, now, updates)
            # Compare-and-set on the exact state we read: the status AND the history length.
            # A concurrent writer bumps transition_count, so exactly one of two racers wins.
            won = Execution.objects.filter(
                pk=execution.pk, status=src, transition_count=current.transition_count, **guard
            ).update(**updates)
            if won:
                seq = current.transition_count + 1
                break
            current = _reread_after_lost_race(execution, guard)
        else:  # pragma: no cover - needs 20 writers interleaving on one row
            raise IllegalTransition(execution.pk, current.status, to, "too much contention")

        step = Transition.objects.create(
            execution_id=execution.pk,
            seq=seq,
            type=type,
            from_status=src,
            to_status=to or src,
            actor_type=actor.type,
            actor_user_id=actor.user_id,
            actor_key_id=actor.key_id,
            actor_label=actor.label,
            created_at=now,
            **_clean_details(details),
        )
        # Keep the caller's object in step with the row it just changed.
        _refresh(execution, src_row=current, to=to, seq=seq, now=now, updates=updates)
        _schedule_event(execution, step)
        _after_move(execution, src=src, to=to, current=current, updates=updates)
    return step


def _move_fields(current: Execution, to: str, now: Any, updates: dict[str, Any]) -> None:
    """The columns a move to `to` sets besides the status."""
    updates["status"] = to
    if to == "running" and current.started_at is None:
        updates["started_at"] = now
    if to in TERMINAL:
        updates["completed_at"] = now
        begun = current.started_at or current.created_at
        # The engine passes its own (running time, not time handed back).
        updates.setdefault("duration_ms", max(0, int((now - begun).total_seconds() * 1000)))
        updates["lease_owner"] = ""
        updates["lease_expires_at"] = None


def _after_move(
    execution: Execution, *, src: str, to: str | None, current: Execution, updates: dict
) -> None:
    if to in TERMINAL:
        rollups.count_ended(execution, status=to, created_at=current.created_at, updates=updates)
    # Only a parked run holds open approvals (they are created as it parks and resolved
    # before it runs again), so other endings skip the query.
    if to in TERMINAL and src == Status.AWAITING_APPROVAL:
        for callback in _ON_END:
            callback(execution)


def append_many(
    execution: Execution,
    entries: list[dict[str, Any]],
    *,
    guard: dict[str, Any] | None = None,
    fields: dict[str, Any] | None = None,
    actor: Actor = SYSTEM,
) -> list[Transition]:
    """Append several history entries in one compare-and-set and one INSERT: what the engine
    held back (a run's start, its steps without side effects) and, last, possibly its end.

    Each entry is {"type": …, "to": status or None, **details}; every move is checked against
    the table in order, as `transition()` would. Each entry keeps its own seq and details
    (its own started/ended times); events go out per entry after commit.
    """
    if not entries:
        return []
    guard = guard or {}
    # No savepoint: the engine calls this as the whole of its transaction, and a refusal
    # (IllegalTransition, GuardFailed) is raised before anything is written.
    with transaction.atomic(savepoint=False):
        current = execution
        for _ in range(_CAS_ATTEMPTS):
            src = status = current.status
            moves = []
            for entry in entries:
                to = entry.get("to")
                if to is not None and not can_move(status, to):
                    raise IllegalTransition(execution.pk, status, to)
                if to is None and status in TERMINAL:
                    raise IllegalTransition(
                        execution.pk, status, None, f"execution {execution.pk} is already {status}"
                    )
                moves.append((status, to or status))
                status = to or status
            now = timezone.now()
            updates: dict[str, Any] = {
                **(fields or {}),
                "transition_count": F("transition_count") + len(entries),
                "updated_at": now,
            }
            if status != src:
                _move_fields(current, status, now, updates)
                if status in TERMINAL and current.started_at is None:
                    updates.setdefault("started_at", now)
            won = Execution.objects.filter(
                pk=execution.pk, status=src, transition_count=current.transition_count, **guard
            ).update(**updates)
            if won:
                first = current.transition_count + 1
                break
            current = _reread_after_lost_race(execution, guard)
        else:  # pragma: no cover - needs 20 writers interleaving on one row
            raise IllegalTransition(execution.pk, current.status, status, "too much contention")
        steps = Transition.objects.bulk_create(
            transition_rows(execution.pk, first, entries, moves, actor=actor, now=now)
        )
        to = status if status != src else None
        last = first + len(entries) - 1
        _refresh(execution, src_row=current, to=to, seq=last, now=now, updates=updates)
        # The execution's page is told of the moves and of the last entry only: a page that
        # sees a gap in seq reads the entries it missed in one query (live/consumers.py), so
        # the steps between need no message each (they were a third of a pure run's sends).
        for i, step in enumerate(steps):
            last = i == len(steps) - 1
            _schedule_event(execution, step, publish=last or step.from_status != step.to_status)
        _after_move(execution, src=src, to=to, current=current, updates=updates)
    return steps


@dataclass
class Pending:
    """One execution's write held for a batch (`append_batch`): its entries and columns as
    `append_many` takes them, and what to do once it is in (`events`, `then`: the engine's)."""

    execution: Execution
    entries: list[dict[str, Any]]
    fields: dict[str, Any]
    guard: dict[str, Any]
    events: list[Any] = field(default_factory=list)
    then: Callable[[], None] | None = None


def _clean_details(details: dict[str, Any]) -> dict[str, Any]:
    allowed = {
        "step_path",
        "step_kind",
        "input",
        "output",
        "usage",
        "cost",
        "message",
        "started_at",
        "ended_at",
    }
    unknown = set(details) - allowed
    if unknown:
        raise TypeError(f"unknown transition detail(s): {', '.join(sorted(unknown))}")
    if isinstance(details.get("cost"), float):
        details["cost"] = Decimal(str(details["cost"]))
    return details


def _refresh(
    execution: Execution,
    *,
    src_row: Execution,
    to: str | None,
    seq: int,
    now: Any,
    updates: dict[str, Any],
) -> None:
    if src_row is not execution:
        for field in ("status", "started_at", "completed_at", "duration_ms", "output", "error"):
            setattr(execution, field, getattr(src_row, field))
    for key, value in updates.items():
        if key in {"transition_count", "status"}:
            continue
        if hasattr(value, "resolve_expression"):
            continue
        setattr(execution, key, value)
    execution.transition_count = seq
    execution.updated_at = now
    if to is not None:
        execution.status = to


def _reread_after_lost_race(execution: Execution, guard: dict[str, Any]) -> Execution:
    """The row as the writer that won the compare-and-set left it; a guard it no longer meets
    (another owner, say) is a refusal rather than a retry."""
    current = Execution.objects.filter(pk=execution.pk).first()
    if current is None:
        raise Execution.DoesNotExist(f"execution {execution.pk} does not exist")
    if guard and any(getattr(current, k) != v for k, v in guard.items()):
        raise GuardFailed(f"execution {execution.pk} no longer matches {guard}")
    return current


def _schedule_event(execution: Execution, step: Transition, *, publish: bool = True) -> None:
    transaction.on_commit(
        lambda: events.transition_committed(execution=execution, transition=step, publish=publish)
    )


def record_start(execution: Execution, *, actor: Actor = SYSTEM, input: Any = None) -> Transition:
    """Insert a new, unsaved execution together with its `init` entry (seq 1), in the caller's
    transaction: what `create()` then `record(type="init")` wrote, in two INSERTs (one
    statement on PostgreSQL, bulk.insert_pair) instead of an INSERT, a savepoint, a
    compare-and-set UPDATE and an INSERT. Nobody can see the row
    before it commits, so there is no race to guard against (docs/performance-history.md, "API")."""
    step = start_entry(execution, actor=actor, input=input)
    with transaction.atomic(savepoint=False):
        # One statement on PostgreSQL (one round trip fewer per start).
        bulk.insert_pair(execution, step)
        _schedule_event(execution, step)
    return step


def start_entry(execution: Execution, *, actor: Actor = SYSTEM, input: Any = None) -> Transition:
    """A new execution's `init` entry (seq 1), unsaved, and the row's own fields for it: what
    record_start writes, also for the starts written together on the event loop
    (services.loopstarts.loop_starts_insert), which then calls starts_committed."""
    now = timezone.now()
    execution.transition_count = 1
    execution.updated_at = now
    return Transition(
        execution_id=execution.pk,
        seq=1,
        type="init",
        from_status=execution.status,
        to_status=execution.status,
        actor_type=actor.type,
        actor_user_id=actor.user_id,
        actor_key_id=actor.key_id,
        actor_label=actor.label,
        created_at=now,
        **_clean_details({"input": input}),
    )


def start_committed(execution: Execution, step: Transition) -> None:
    """What record_start schedules on commit (the live event and the listeners), for a start
    its caller committed itself."""
    events.transition_committed(execution=execution, transition=step)


def starts_committed(pairs: list[tuple[Execution, Transition]]) -> None:
    """`start_committed` for many starts at once: their messages in one hand-over."""
    events.transitions_committed([(execution, [step]) for execution, step in pairs])


def transition_rows(
    execution_id: Any, first: int, entries: list[dict], moves: list[tuple], *, actor: Actor, now
) -> list[Transition]:
    """A run's new entries as unsaved Transition rows from seq `first`, each with its
    (from, to) move: built here for `transition()` and for the engine's batch
    (lifecycle_batch.append_batch) alike."""
    return [
        Transition(
            execution_id=execution_id,
            seq=first + i,
            type=entry["type"],
            from_status=from_status,
            to_status=to_status,
            actor_type=actor.type,
            actor_user_id=actor.user_id,
            actor_key_id=actor.key_id,
            actor_label=actor.label,
            created_at=now,
            **_clean_details({k: v for k, v in entry.items() if k not in ("type", "to")}),
        )
        for i, (entry, (from_status, to_status)) in enumerate(zip(entries, moves, strict=True))
    ]
