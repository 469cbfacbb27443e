"""The durable run context: every step goes through `RunContext.step()`, which replays a step
already recorded (by step path) and otherwise runs it and records it before returning.

Why this makes runs durable: a re-run (after a checkpoint, a crash or a lost lease) walks the
same definition from the top; each step path found in the history returns its recorded output
without running again, so no recorded model call or tool call is ever repeated, and the run
continues with the first step that has no record.

Writes are guarded by the lease: every record is a compare-and-set that also requires
`lease_owner` to be this worker, so a worker that lost its lease (paused, partitioned) cannot
write a step that another worker is already running.

RunContext is assembled from parts that each read in one sitting: stop.py (why a run stops:
cancel, lease, shutdown, timeouts, budgets, the watchdog), stream.py (events and deltas),
effects.py (model and tool calls), checkpoints.py (approvals and input), timers.py (sleeps),
children.py (child runs). This module keeps what they share: the replay table, recording a
step, usage and cost, and parking.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from executions import lifecycle
from executions.engine import writes
from executions.engine.checkpoints import Checkpoints
from executions.engine.children import Children
from executions.engine.effects import Effects
from executions.engine.records import REPLAY_COLUMNS, Recorded, StepResult, jsonable
from executions.engine.stop import (
    ApprovalRejected,
    BudgetExceeded,
    Cancelled,
    EngineStop,
    HandBack,
    LeaseLost,
    NeedsThread,
    Park,
    StepFailed,
    Stops,
)
from executions.engine.stream import Stream
from executions.engine.threads import loop_binding, serial_db
from executions.engine.timers import Timers
from executions.lifecycle import TERMINAL, GuardFailed, IllegalTransition, Status
from executions.models import Execution, Transition

__all__ = [
    "ApprovalRejected",
    "BudgetExceeded",
    "Cancelled",
    "EngineStop",
    "HandBack",
    "LeaseLost",
    "NeedsThread",
    "Park",
    "Recorded",
    "RunContext",
    "StepFailed",
    "StepResult",
    "jsonable",
    "loop_binding",
]

# A bound on the threads one step's branches may use, whatever `parallelism` asks for.
MAX_BRANCH_THREADS = 16
# Steps without side effects: recomputing them after a crash gives the same result, so their
# records are held back and written in the transaction of the next write that must happen
# (a step with a side effect, a park, the run's end). docs/decisions.md, "Engine".
PURE_KINDS = frozenset(
    {"evaluate", "set", "get", "log", "return", "error", "if", "switch", "foreach", "map"}
    | {"parallel"}
)
# Records that may ride with a model call's held record (see Effects.llm): pure steps, and a
# prompt step's own summary record.
HELD_WITH_MODEL = PURE_KINDS | {"llm", "prompt"}
# How long a start written by a batch stands for a fresh read of the row (take_start_proof).
START_PROOF_SECONDS = 1.0


class RunContext(Stops, Stream, Effects, Checkpoints, Timers, Children):
    def __init__(
        self,
        execution: Execution,
        *,
        owner: str,
        worker: Any = None,
        fresh: bool = False,
        pure_only: bool = False,
        rows: list[dict[str, Any]] | None = None,
    ) -> None:
        self.execution = execution
        self.owner = owner
        self.worker = worker
        version = execution.agent_version
        self.config: dict[str, Any] = dict(version.config or {}) if version else {}
        self.output_schema = version.output_schema if version else None
        limits = self.config.get("limits") or self.config.get("run_budget") or {}
        self.limits: dict[str, Any] = limits if isinstance(limits, dict) else {}
        self.state: dict[str, Any] = dict(execution.state or {})
        self.started = time.monotonic()
        self.active_before = float(self.state.get("active_seconds") or 0.0)
        self.lease_released = False
        self._lock = threading.RLock()
        self._init_stops()
        self._init_stream()
        self._bind_thread = loop_binding()
        self.recorded: dict[str, Recorded] = {}
        self.tokens = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self.cost_unknown = False
        self.cost = Decimal(0)
        self.steps_done = 0
        # Records held back until the next write that must happen (see PURE_KINDS).
        self._deferred: list[dict[str, Any]] = []
        self._deferred_fields: dict[str, Any] = {}
        self._deferred_events: list[tuple[str, dict[str, Any]]] = []
        self.start_deferred = False
        # A model call's record (and its reply's last content event) held back until the next
        # write: set by Effects.llm, cleared by write(). Only pure steps may run meanwhile.
        self._held_effect = False
        # Tried in a batch (engine/batch.py): anything not pure raises NeedsThread before it
        # does anything, and the run's end is handed to the batch (`collected`), not written.
        self.pure_only = pure_only
        self.collected: lifecycle.Pending | None = None
        self.needs_thread = False  # it stopped there, before a step that is not pure
        # A fresh run (it was pending a moment ago) has no recorded steps to replay; a run
        # handed on from a batch brings the rows the batch read.
        if fresh:
            rows = []
        elif rows is None:
            rows = list(
                Transition.objects.filter(execution_id=execution.pk, type="step").values(
                    *REPLAY_COLUMNS
                )
            )
        self.rows = rows
        self.lost_worker = False  # resumed after its worker died (runner.context_for)
        # When its batch wrote its start (runner.context_for), for take_start_proof.
        self.started_by_batch: float | None = None
        for row in rows:
            self.recorded[row["step_path"]] = Recorded(
                row["output"], row["step_kind"], row["usage"], row["cost"]
            )
            self._count(row["usage"], row["cost"])
            self.steps_done += 1

    # --- usage, cost, time -------------------------------------------------------------------

    def _count(self, usage: dict[str, Any] | None, cost: Decimal | None) -> None:
        if not usage:
            return
        for key in ("prompt_tokens", "completion_tokens"):
            self.tokens[key] += int(usage.get(key) or 0)
        self.tokens["total_tokens"] = (
            self.tokens["prompt_tokens"] + self.tokens["completion_tokens"]
        )
        if cost is None:
            self.cost_unknown = True
        else:
            self.cost += Decimal(cost)

    @property
    def total_cost(self) -> Decimal | None:
        return None if self.cost_unknown else self.cost

    def usage_fields(self) -> dict[str, Any]:
        return {"token_usage": dict(self.tokens), "cost": self.total_cost}

    def active_seconds(self) -> float:
        return self.active_before + (time.monotonic() - self.started)

    def lease_until(self) -> Any:
        return timezone.now() + timedelta(seconds=settings.LEASE_SECONDS)

    @property
    def guard(self) -> dict[str, Any]:
        return {"lease_owner": self.owner}

    # --- steps -------------------------------------------------------------------------------

    def replay(self, path: str) -> Recorded | None:
        return self.recorded.get(path)

    def step(
        self,
        path: str,
        kind: str,
        fn: Callable[[], Any],
        *,
        input: Any = None,
        message: str = "",
        extra_fields: dict[str, Any] | None = None,
    ) -> Any:
        """Replay the step at `path` or run `fn` and record what it returned."""
        done = self.recorded.get(path)
        if done is not None:
            return done.output
        self.check()
        if kind not in PURE_KINDS:
            self.gate()
            self.before_effect()
        started_at = timezone.now()
        result = fn()
        if not isinstance(result, StepResult):
            result = StepResult(output=result)
        return self.record(
            path,
            kind,
            input=result.input if result.input is not None else input,
            output=result.output,
            usage=result.usage,
            cost=result.cost,
            started_at=started_at,
            message=result.message or message,
            extra_fields=extra_fields,
        )

    def record(
        self,
        path: str,
        kind: str,
        *,
        input: Any = None,
        output: Any = None,
        usage: dict[str, Any] | None = None,
        cost: Decimal | None = None,
        started_at: Any = None,
        message: str = "",
        extra_fields: dict[str, Any] | None = None,
    ) -> Any:
        output = jsonable(output)
        input = jsonable(input)
        with self._lock:
            if path in self.recorded:  # a parallel branch recorded it first
                return self.recorded[path].output
            self._count(usage, cost)
            fields: dict[str, Any] = dict(extra_fields or {})
            if usage:
                fields.update(self.usage_fields())
            details = {
                "step_path": path,
                "step_kind": kind,
                "input": input,
                "output": output,
                "usage": usage or None,
                "cost": cost,
                "message": message[:2000],
                "started_at": started_at or timezone.now(),
                "ended_at": timezone.now(),
            }

            entry = {"type": "step", **details}
            if kind in PURE_KINDS or (self._held_effect and kind in HELD_WITH_MODEL):
                self._deferred.append(entry)
                self._deferred_fields.update(fields)
            else:
                self.write([entry], fields)
            self.recorded[path] = Recorded(output, kind, usage, cost)
            self.steps_done += 1
        self.check_budgets()
        return output

    # --- held-back records -------------------------------------------------------------------

    def gate(self) -> None:
        """Before anything that is not pure: a run tried in a batch goes to a thread instead."""
        if self.pure_only:
            raise NeedsThread()

    def defer_start(self, event: tuple[str, dict[str, Any]]) -> None:
        """pending → running, held back with the steps after it (and the event announcing it)."""
        with self._lock:
            self._deferred.append({"type": "start", "to": Status.RUNNING})
            self._deferred_events.append(event)
            self.start_deferred = True

    def write(
        self,
        entries: list[dict[str, Any]],
        fields: dict[str, Any] | None = None,
        *,
        then: Callable[[], None] | None = None,
    ) -> None:
        """Write `entries` now, after the records held back, as one compare-and-set and one
        INSERT (lifecycle.append_many) that also renews the lease; `then` runs in the same
        transaction (the end's event, waking a parent)."""
        with self._lock:
            held, held_fields, started, held_events = self._take_held()
            events = started + held_events
            all_entries = held + entries
            if not all_entries and then is None:
                return
            merged = {**held_fields, **(fields or {})}
            ends = any(e.get("to") in TERMINAL for e in all_entries)
            if not ends:
                merged.setdefault("lease_expires_at", self.lease_until())
            if self.pure_only:
                if not ends:
                    # Put back: a write before the end means a side effect comes next.
                    self._deferred, self._deferred_fields = held, held_fields
                    self._deferred_events, self._held_events = started, held_events
                    raise NeedsThread()
                # The run's end, in a batch: the batch writes it with the others' (one
                # transaction), then emits `events` and runs `then` if its compare-and-set won.
                self.collected = lifecycle.Pending(
                    self.execution, all_entries, merged, self.guard, events=events, then=then
                )
                return
            # PostgreSQL, nothing else to write with it: one autocommitted statement
            # (engine/writes.py); a lost compare-and-set falls through to append_many.
            if writes.usable(self, then) and writes.write_alone(
                self, all_entries, merged, events, then
            ):
                self.start_deferred = False
                self._held_effect = False
                return
            try:
                with transaction.atomic(), self.batched_events():
                    lifecycle.append_many(
                        self.execution, all_entries, guard=self.guard, fields=merged
                    )
                    for type, data in events:
                        self.emit(type, data)
                    if then is not None:
                        then()
            except (GuardFailed, IllegalTransition):
                raise self.stopped_writing() from None
            self.start_deferred = False
            self._held_effect = False

    def _take_held(self) -> tuple[list, dict, list, list]:
        """The records, columns and events held back (cleared here): what the next write
        writes first."""
        held, self._deferred = self._deferred, []
        held_fields, self._deferred_fields = self._deferred_fields, {}
        started, self._deferred_events = self._deferred_events, []
        held_events, self._held_events = self._held_events, []
        return held, held_fields, started, held_events

    def held_start(self) -> lifecycle.Pending:
        """A fresh run stopped in a batch before its first side effect (NeedsThread): its start
        and the pure steps before that effect, as the write its thread would make first
        (before_effect), for the batch to write with others' (engine/batch.py)."""
        with self._lock:
            held, fields, started, held_events = self._take_held()
            fields = {**fields, "lease_expires_at": self.lease_until()}
            return lifecycle.Pending(
                self.execution, held, fields, self.guard, events=started + held_events
            )

    def take_start_proof(self) -> bool:
        """Whether this run's start was written by its batch less than START_PROOF_SECONDS ago
        (once): that compare-and-set on status and lease proved what a fresh read before the
        first side effect would (Effects.llm), as a start written by the run itself does."""
        at, self.started_by_batch = self.started_by_batch, None
        return at is not None and time.monotonic() - at < START_PROOF_SECONDS

    def write_deferred(self) -> None:
        """Write the records held back (before a park's own write, or at a stop)."""
        self.write([])

    def before_effect(self) -> None:
        """Before a side effect begins: a run still shown as pending is shown running first
        (with the pure steps before it), so a long model call is not watched as queued."""
        if self.start_deferred or self._held_effect:
            self.write([])

    def raise_stop(self) -> None:
        """As Stops.raise_stop; a run handed back at shutdown first writes a model call's held
        record, so the run resumed elsewhere replays the call instead of repeating it."""
        if self._held_effect and (self._stop_reason or self._poll(force=True)) == "handback":
            self.write_deferred()
        super().raise_stop()

    def note(self, type: str, *, path: str = "", message: str = "", **details: Any) -> None:
        """A history entry that is not a step (a retry, a log line)."""
        self.write([{"type": type, "step_path": path, "message": message[:2000], **details}])

    # --- parking -----------------------------------------------------------------------------

    def parked_state(self) -> dict[str, Any]:
        state = dict(self.state)
        state["active_seconds"] = round(self.active_seconds(), 3)
        return state

    def park_transition(
        self, to: str, *, path: str, kind: str, input: Any, message: str, state: dict[str, Any]
    ) -> None:
        """Park with a status change (awaiting approval / input), releasing the lease."""
        entry = {
            "type": "wait",
            "to": to,
            "step_path": path,
            "step_kind": kind,
            "input": input,
            "message": message,
        }
        fields = {"state": state, "lease_owner": "", "lease_expires_at": None}
        self.write([entry], {**fields, **self.usage_fields()})
        self.state = state
        self.lease_released = True

    def park_in_place(
        self,
        type: str | None,
        *,
        path: str,
        message: str,
        state: dict[str, Any],
        runnable_at: Any = None,
    ) -> None:
        """Park without a status change (sleep, waiting for a child): the execution stays
        running but no worker holds it until `runnable_at` (a sleep's end) or, when None,
        until the child's end makes it runnable."""
        fields = {
            "state": state,
            "lease_owner": "",
            "lease_expires_at": None,
            "runnable_at": runnable_at,
        }
        if type is None:
            self.write_deferred()
            won = Execution.objects.filter(pk=self.execution.pk, lease_owner=self.owner).update(
                **fields, updated_at=timezone.now()
            )
            if not won:
                raise self.stopped_writing()
        else:
            entry = {"type": type, "step_path": path, "message": message}
            self.write([entry], {**fields, **self.usage_fields()})
        self.state = state
        self.lease_released = True

    # --- parallel branches -------------------------------------------------------------------

    def run_parallel(self, fns: list[Callable[[], Any]], parallelism: int | None = None) -> list:
        """Run branches on threads. Failures win over parks; a park is raised after every branch
        has run as far as it can (their finished steps are recorded)."""
        if (
            len(fns) <= 1
            or (parallelism is not None and parallelism <= 1)
            or self.pure_only  # pure branches in a batch: no threads for a few expressions
            or serial_db()
        ):
            return [fn() for fn in fns]
        results: list[Any] = [None] * len(fns)
        errors: list[BaseException | None] = [None] * len(fns)

        def branch(i: int) -> None:
            try:
                results[i] = fns[i]()
            except BaseException as exc:  # noqa: BLE001 - re-raised below on the caller's thread
                errors[i] = exc
            finally:
                connections.close_all()

        workers = min(len(fns), parallelism or len(fns), MAX_BRANCH_THREADS)
        with ThreadPoolExecutor(max_workers=workers, initializer=self._bind_thread) as pool:
            list(pool.map(branch, range(len(fns))))
        for exc in errors:
            if exc is not None and not isinstance(exc, Park):
                raise exc
        for exc in errors:
            if exc is not None:
                raise exc
        return results
