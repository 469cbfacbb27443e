"""Why a run stops, in one place: the engine's control-flow exceptions, the one cascade of
stop reasons (shutdown, timeouts, cancel, lost lease) read between steps and by the watchdog
during a model call, and the budgets.

A stop reason is a short string ("handback", "timeout", "step_timeout", "cancelled",
"lease_lost"); `raise_stop()` turns it into the exception the runner handles.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.db import connections

from executions.engine.threads import release_db_connection
from executions.lifecycle import TERMINAL
from executions.models import Execution

logger = logging.getLogger("steward.worker")

# How often (at most) a running step re-reads the row to notice a cancel or a lost lease.
CANCEL_POLL_SECONDS = 0.25


class EngineStop(BaseException):
    """Control flow of the engine. A BaseException so an agent's `except Exception` cannot
    swallow a park, a cancel or a budget stop."""


class Park(EngineStop):
    """Unwinds to the runner, which parks the execution by calling `apply()` in a transaction."""

    def __init__(self, reason: str, apply: Callable[[], None]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.apply = apply


class Cancelled(EngineStop):
    """The execution reached a terminal status under us (cancelled by someone)."""


class LeaseLost(EngineStop):
    """Another worker holds the execution now; stop without writing."""


class NeedsThread(EngineStop):
    """A run tried in a batch (engine/batch.py) reached something that is not pure (a model or
    tool call, an approval, input, a sleep, a child): nothing was written or sent; it goes to a
    thread of its own and runs from its last record as any claimed run does."""


class HandBack(EngineStop):
    """The worker is shutting down: release the lease and queue the run again."""


class BudgetExceeded(EngineStop):
    """A budget of the version ran out; the execution fails with a message naming it."""

    def __init__(self, budget: str, limit: Any, used: Any) -> None:
        super().__init__(f"budget exceeded: {budget} ({limit}); used {used}")
        self.budget = budget


class StepFailed(Exception):
    """Fail the execution with this message (a permanent, readable error)."""


class ApprovalRejected(Exception):
    """Raised by a Python agent's `ctx.approval()` when a reviewer rejected (on_reject="raise")."""

    def __init__(self, refusal: dict[str, Any]) -> None:
        super().__init__(f"rejected: {refusal.get('reason') or 'no reason given'}")
        self.refusal = refusal


class StopSignal:
    """`should_stop` for a provider call: callable between chunks, and a place to register the
    stream's `close` so the watchdog can end a call that is blocked waiting for bytes."""

    def __init__(self, stops: Stops) -> None:
        self.stops = stops
        self._closers: list[Callable[[], Any]] = []

    def __call__(self) -> bool:
        return self.stops.should_stop()

    def register(self, closer: Callable[[], Any]) -> None:
        self._closers.append(closer)

    def trip(self) -> None:
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing a half-dead stream may itself fail
                logger.debug("closing a provider stream failed", exc_info=True)


class Stops:
    """The stop-reason part of RunContext. Uses: execution, owner, worker, limits, tokens,
    cost, cost_unknown, steps_done, active_seconds(), _lock."""

    execution: Execution
    owner: str
    worker: Any
    limits: dict[str, Any]
    tokens: dict[str, int]
    cost: Decimal
    cost_unknown: bool
    steps_done: int
    _lock: threading.RLock
    active_seconds: Callable[[], float]  # RunContext's running time, downtime excluded

    def _init_stops(self) -> None:
        self._last_poll = time.monotonic()
        self._stop_reason: str | None = None
        self._step_deadline: float | None = None

    # --- the one cascade ------------------------------------------------------------------

    def _reason(self, *, force: bool = False, background: bool = False) -> str | None:
        """Why this run must stop now, if it must. Between steps (`background` False) the row
        is read at most every CANCEL_POLL_SECONDS unless `force`; the watchdog (`background`)
        reads it on its own tick. Under a worker, the worker's one poll for every run it holds
        answers instead of a read per run (except a forced read before a side effect)."""
        if self.worker is not None and self.worker.stopping:
            return "handback"
        timeout = self.limits.get("timeout_seconds")
        if timeout and self.active_seconds() > float(timeout):
            return "timeout"
        if self._step_deadline is not None and time.monotonic() > self._step_deadline:
            return "step_timeout"
        if self.worker is not None and (background or not force):
            return self.worker.stop_reason(str(self.execution.pk))
        if not (force or background):
            now = time.monotonic()
            if now - self._last_poll < CANCEL_POLL_SECONDS:
                return None
            self._last_poll = now
        return self._read_reason(background=background)

    def _read_reason(self, *, background: bool) -> str | None:
        if not background:
            row = (
                Execution.objects.filter(pk=self.execution.pk)
                .values_list("status", "lease_owner")
                .first()
            )
            if row is None:
                return "cancelled"
        else:
            try:
                # Under the context lock: SQLite's shared in-memory cache (tests) fails a write
                # that meets a concurrent read instead of waiting.
                with self._lock:
                    row = (
                        Execution.objects.filter(pk=self.execution.pk)
                        .values_list("status", "lease_owner")
                        .first()
                    )
            except Exception:  # noqa: BLE001 - the next poll tries again
                return None
            finally:
                release_db_connection()
            if row is None:
                return None  # not visible from this thread (an uncommitted test row)
        if row[0] in TERMINAL:
            return "cancelled"
        if row[1] != self.owner:
            return "lease_lost"
        return None

    def _poll(self, force: bool = False) -> str | None:
        if not self._stop_reason:
            self._stop_reason = self._reason(force=force)
        return self._stop_reason

    def should_stop(self) -> bool:
        return self._poll() is not None

    def raise_stop(self) -> None:
        reason = self._stop_reason or self._poll(force=True)
        if reason == "cancelled":
            raise Cancelled()
        if reason == "lease_lost":
            raise LeaseLost()
        if reason == "handback":
            raise HandBack()
        if reason == "timeout":
            limit = self.limits.get("timeout_seconds")
            raise BudgetExceeded("timeout_seconds", limit, f"{self.active_seconds():.1f}s")
        if reason == "step_timeout":
            limit = self.limits.get("step_timeout_seconds")
            raise BudgetExceeded("step_timeout_seconds", limit, f"more than {limit}s")

    # --- between steps and during a call --------------------------------------------------

    def check(self, *, fresh: bool = False) -> None:
        """Between steps: stop here if cancelled, shutting down, or over a budget. `fresh`
        re-reads the row now (before a step with side effects: a model or tool call)."""
        if self._poll(force=fresh) is not None:
            self.raise_stop()
        max_steps = self.limits.get("max_steps")
        if max_steps and self.steps_done >= int(max_steps):
            raise BudgetExceeded("max_steps", max_steps, self.steps_done)

    def check_budgets(self) -> None:
        max_tokens = self.limits.get("max_tokens")
        if max_tokens and self.tokens["total_tokens"] > int(max_tokens):
            raise BudgetExceeded("max_tokens", max_tokens, self.tokens["total_tokens"])
        max_cost = self.limits.get("max_cost_usd")
        if max_cost is not None and not self.cost_unknown and self.cost > Decimal(str(max_cost)):
            raise BudgetExceeded("max_cost_usd", max_cost, f"{self.cost:.6f}")

    def stopped_writing(self) -> EngineStop:
        """A record was refused: find out whether we were cancelled or lost the lease."""
        row = Execution.objects.filter(pk=self.execution.pk).values_list("status").first()
        if row is None or row[0] in TERMINAL:
            return Cancelled()
        return LeaseLost()

    def watch_call(self, signal: StopSignal) -> Callable[[], None]:
        """Watch a model call in flight; returns what to call when it is over. Under a worker
        its maintenance tick watches every call of the process (no thread per call);
        otherwise a watchdog thread does."""
        if self.worker is not None:
            key = self.worker.watch_call(self, signal)
            return lambda: self.worker.unwatch_call(key)
        finished = threading.Event()
        watchdog = threading.Thread(
            target=self.watch, args=(signal, finished), name="steward-watchdog", daemon=True
        )
        watchdog.start()
        return finished.set

    def watch(self, signal: StopSignal, finished: threading.Event) -> None:
        """While a model call is in flight, notice a cancel / lost lease / timeout / shutdown
        even when no chunk arrives, and close the stream so the call ends now."""
        try:
            while not finished.wait(CANCEL_POLL_SECONDS):
                reason = self._reason(background=True)
                if reason is not None and not finished.is_set():
                    self._stop_reason = reason
                    signal.trip()
                    return
        finally:
            connections.close_all()
