"""The worker: claims runnable executions from the execution table (engine/queue.py) and runs
up to N at once on threads; the same process runs side work (django.tasks: webhooks, e-mail).

Hot path: claim a batch in one statement, hand each row to a thread, and when a run ends or a
wake-up arrives, claim again. An idle worker sleeps until the next due time it knows of (a
sleep's end, an expired lease) or a wake-up, whichever comes first: no fixed polling interval.

Why threads and not asyncio: runs mostly wait on model I/O, and a blocked thread costs ~100 KB
of resident memory here (docs/decisions.md, "Engine": measured with 1,000 runs waiting on a
1 s model); the providers' sync clients and the ORM stay as they are. Only a few of them
compute at once (threads.Gate, sized from the database pool): the rest wait blocked, so a
thousand threads never queue for the GIL while holding pooled connections.

A maintenance thread, once per tick, does for every run the process holds what would
otherwise be a read per run: one query for cancels and lost leases (and it trips the model
calls of those runs), one statement to renew all their leases; and, less often, approval
timeouts, retention, and the side-work queues.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import SyncToAsync
from django.conf import settings
from django.db import OperationalError, close_old_connections, connections

from executions.engine import (
    batch,
    checkpoints,
    providers,
    queue,
    retention,
    runner,
    sidework,
    tokens,
    wakeup,
)
from executions.engine.holdings import Holdings
from executions.engine.threads import Gate, loop_binding
from executions.models import Execution

logger = logging.getLogger("steward.worker")

MAINTENANCE_TICK_SECONDS = 0.25
# An idle worker asks the database for the next due time at most this often; in between,
# due times arrive as wake-ups' hints (a sleep's end) and an expired lease waits this long.
IDLE_QUERY_SECONDS = 1.0
SIDE_WORK_SECONDS = 0.5
PURGE_INTERVAL_SECONDS = 3600.0
# Side work runs on a few threads of its own: a slow webhook must not take a run's thread.
SIDE_WORK_THREADS = 2
# Claim at most this many per statement: a big batch held by one busy worker starves others.
CLAIM_BATCH = 64
# Pooled connections a worker uses outside its run threads: the claim loop, the maintenance
# tick's timers and retention, the side-work threads.
RESERVED_CONNECTIONS = 2 + SIDE_WORK_THREADS
# Run threads computing at once when there is no pool to size the gate from (SQLite).
GATE_WITHOUT_POOL = 16


def gate_size(concurrency: int) -> int:
    """How many run threads compute at once (threads.Gate): as many as the database pool can
    serve with a connection each, beside the worker's own users of the pool."""
    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    if isinstance(pool, dict):
        size = int(pool.get("max_size") or pool.get("min_size") or 4)
        bound = max(2, size - RESERVED_CONNECTIONS)
    elif pool:
        bound = 2  # psycopg's default pool: 4 connections
    else:
        bound = GATE_WITHOUT_POOL
    return max(1, min(concurrency, bound))


def side_queues() -> list[str]:
    """The django.tasks queues this worker runs (all configured but the legacy `executions`)."""
    configured = settings.TASKS["default"].get("QUEUES") or ["default"]
    return [q for q in configured if q != "executions"]


def default_queues() -> list[str]:
    return side_queues()


class Worker:
    def __init__(
        self,
        *,
        concurrency: int = 1,
        name: str = "worker",
        queues: list[str] | None = None,
        poll_interval: float | None = None,
        backend: str = "default",
        maintenance: bool = True,
        grace_seconds: float = 30.0,
    ) -> None:
        self.concurrency = max(1, int(concurrency))
        self.name = name
        self.queues = [q for q in (queues or side_queues()) if q != "executions"]
        # The longest an idle worker sleeps without a wake-up: a safety net for a lost
        # pub/sub message only; due times are computed, not polled for.
        self.max_idle = float(poll_interval or settings.LEASE_SECONDS)
        self.backend = backend
        self.maintenance = maintenance
        self.grace_seconds = grace_seconds
        self.owner = f"{name}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"[:120]
        self.stopping = False
        # Between the start and the end of run(): only then does this worker take tokens (a
        # Worker made and never run, as the tests make them, must not).
        self._running = False
        # The runs this process holds, and why one must stop (cancelled, lease lost), from
        # one poll for all of them.
        self._holdings = Holdings()
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        # How many runs the last batch finished without a thread (engine/batch.py): a claim
        # may take that many beyond the free threads, since pure runs need none.
        self._batch_credit = CLAIM_BATCH
        # Due-now wake-ups between processes are tokens taken only while this has room.
        self._wake = wakeup.subscribe(ready=self.has_room, on_run=self.run_token)
        # Model calls in flight: (run context, stop signal), tripped by the maintenance tick.
        self._calls: dict[int, tuple[Any, Any]] = {}
        self._calls_lock = threading.Lock()
        self._stopped = threading.Event()
        self.completed = 0
        # The next due time the idle query found (monotonic), reused while runs are in flight.
        self._next_due = 0.0
        self._next_due_read = -IDLE_QUERY_SECONDS  # when (monotonic) it was last read
        # The last claim found no due row, and no wake-up has come since: a run's end alone
        # does not make the loop claim again.
        self._dry = False
        # Renewal and the cancel poll on a connection of their own (never starved by runs).
        self._keeper = queue.LeaseKeeper()
        # Run threads computing at once; the others wait blocked (a model call gives its
        # place back while it waits for the reply).
        self._gate = Gate(gate_size(self.concurrency))

    # --- the executions this process holds ------------------------------------------------

    def hold(self, execution_id: str) -> bool:
        """False when the run of this claimed row is still on a thread here (engine/holdings.py)."""
        return self._holdings.hold(execution_id)

    def unhold(self, execution_id: str) -> None:
        if self._holdings.unhold(execution_id):
            queue.release_reclaimed(execution_id, owner=self.owner)

    def held(self) -> list[str]:
        return self._holdings.keys()

    def stop_reason(self, execution_id: str) -> str | None:
        return self._holdings.reason(execution_id)

    def watch_call(self, ctx: Any, signal: Any) -> int:
        key = id(signal)
        with self._calls_lock:
            self._calls[key] = (ctx, signal)
        return key

    def unwatch_call(self, key: int) -> None:
        with self._calls_lock:
            self._calls.pop(key, None)

    def poll_held(self) -> None:
        """One query for every execution this process runs: note the cancelled ones and those
        whose lease another worker took, then end the model calls of runs that must stop."""
        self._holdings.note_states(self._keeper.states, self.owner)
        self.trip_calls()

    def trip_calls(self) -> None:
        with self._calls_lock:
            calls = list(self._calls.items())
        for key, (ctx, signal) in calls:
            reason = ctx._reason(background=True)
            if reason is not None:
                ctx._stop_reason = reason
                self.unwatch_call(key)
                signal.trip()

    def wait_stopped(self, timeout: float) -> bool:
        return self._stopped.wait(timeout)

    @property
    def inflight(self) -> int:
        return self._inflight

    def claim_limit(self) -> int:
        """How many runs the next claim may take: the free threads, plus what the last batch
        finished without one."""
        free = self.concurrency - self._inflight
        return min(max(free, 0) + self._batch_credit, CLAIM_BATCH)

    def has_room(self) -> bool:
        """Whether a claim now could take a run (wakeup: this process takes due-now tokens
        only then, so a token goes to a worker that can use it)."""
        return self._running and not self.stopping and self.claim_limit() > 0

    def run_token(self, token: bytes) -> bool:
        """A due-now token that carries a fresh run (engine/tokens.py), on the token taker's
        thread: if this worker is idle, run it to its end here if it is pure, written in one
        statement with no claim before it (an idle run's latency). False: the loop claims it,
        as for any token."""
        if self._inflight or not self.has_room():
            # Busy: the loop's claim takes this run with others and writes their ends
            # together (one statement per batch), which beats one per run under load.
            return False
        execution = tokens.run_of(token)
        if execution is None:
            return False
        with self._inflight_lock:
            self._inflight += 1  # a stop waits for it (_drain), as for a run on a thread
        done = False
        try:
            done = batch.run_token(execution, worker=self)
        finally:
            close_old_connections()  # the connection back to the pool, as after a run
            with self._inflight_lock:
                self._inflight -= 1
                self.completed += done
        return done

    def stop(self) -> None:
        """Stop claiming; running executions hand back at their next step boundary."""
        if not self.stopping:
            logger.info("worker %s stopping (%d in flight)", self.owner, self._inflight)
        self.stopping = True
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        self._running = True
        bind = loop_binding()
        server_loop = _server_loop()
        wakeup.start_listener()
        # On a thread of its own: claiming must not wait for the SDKs to import.
        threading.Thread(target=providers.preload, name="steward-preload", daemon=True).start()
        logger.info("worker %s started (concurrency %d)", self.owner, self.concurrency)
        pool = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix=self.name, initializer=bind
        )
        side_pool = ThreadPoolExecutor(
            max_workers=SIDE_WORK_THREADS, thread_name_prefix=f"{self.name}-side", initializer=bind
        )
        maintenance = None
        if self.maintenance:
            maintenance = threading.Thread(
                target=self._maintain,
                args=(side_pool,),
                name=f"{self.name}-maintenance",
                daemon=True,
            )
            maintenance.start()
        try:
            while not self.stopping:
                if server_loop is not None and (
                    server_loop.is_closed() or not server_loop.is_running()
                ):
                    logger.info("worker %s: the server loop ended", self.owner)
                    break
                self._wake.clear()
                # Take the hints after clearing: one announced before the clear is read here,
                # one announced after it sets the event again, so the wait below returns at
                # once. (Taken only after the wait, a hint that arrived between a claim and
                # this clear sat unread while the loop waited out the safety-net interval.)
                hint = wakeup.take_hint(self._wake)
                if hint is not None:
                    self._next_due = min(self._next_due, hint)
                if wakeup.take_notified(self._wake):
                    self._dry = False  # work was announced: claim
                limit = self.claim_limit()
                if limit > 0 and self._dry and self._due_in() > 0:
                    # Only a run of ours ended since a claim found no due row: a thread
                    # is free, but no work came. No claim statement per run end (with 1,000
                    # runs in flight, each end was an empty claim); new work arrives as a
                    # wake-up, a later due time as a hint or the due-time query below.
                    self._wake.wait(self._due_in())
                    continue
                claimed = self._claim(limit) if limit > 0 else []
                if limit > 0:
                    # Dry only when it found nothing: a claim that took fewer rows than it
                    # asked for may have skipped rows another worker's claim had locked.
                    self._dry = not claimed
                fresh = []
                for execution in claimed:
                    # Not when its run is still on a thread here (our own lease ran out, or
                    # the thread gave it back and has not let go yet): a second one must not
                    # start; the thread hands the lease back when it lets go.
                    if self.hold(str(execution.pk)):
                        fresh.append(execution)
                for execution, rows in self._run_batch(fresh):
                    with self._inflight_lock:
                        self._inflight += 1
                    pool.submit(self._run, execution, rows)
                if limit <= 0:
                    self._wake.wait(self.max_idle)  # a run that ends wakes the loop
                elif len(claimed) >= limit:
                    # A full batch: more may be due. Claim again at once, and pass a token on
                    # so that another worker with room joins (only one was woken).
                    wakeup.pass_on()
                    continue
                elif self._inflight and self._due_in() > 0:
                    # The queue had no more due rows a moment ago, and every later due time
                    # arrives as a wake-up's hint (a sleep's end) or was computed before: no
                    # statement here while a run is on its way to its commit (idle latency).
                    self._wake.wait(self._due_in())
                else:
                    self._wake.wait(self._idle_seconds())
        finally:
            self.stopping = True
            self._drain()
            self._running = False
            handed = 0
            try:
                handed = queue.release_all(owner=self.owner)
            except Exception:  # noqa: BLE001 - the leases then expire and are claimable again
                logger.exception("worker %s could not hand back its leases", self.owner)
            pool.shutdown(wait=False, cancel_futures=True)
            side_pool.shutdown(wait=False, cancel_futures=True)
            wakeup.unsubscribe(self._wake)
            self._stopped.set()
            connections.close_all()
            logger.info("worker %s stopped (%d handed back at exit)", self.owner, handed)

    def _claim(self, limit: int) -> list[Execution]:
        try:
            return queue.claim(owner=self.owner, limit=limit)
        except OperationalError as exc:
            # SQLite busy past its timeout, or the database away: try again shortly.
            logger.warning("worker %s: claim failed (%s)", self.owner, exc)
            close_old_connections()
            self._stopped.wait(0.2)
            return []

    def _idle_seconds(self) -> float:
        now = time.monotonic()
        if now - self._next_due_read < IDLE_QUERY_SECONDS and self._next_due > now:
            # Read a moment ago (a batch just ended): no statement on the way to the next
            # wake-up, so the batch's publish does not share the process with a query.
            return self._due_in()
        self._next_due_read = now
        try:
            seconds = queue.seconds_until_due(cap=self.max_idle)
        except OperationalError:
            seconds = 0.5
        finally:
            connections.close_all()  # an idle worker holds no connection
        self._next_due = time.monotonic() + seconds
        return seconds

    def _due_in(self) -> float:
        """Seconds until the due time last computed (a sleep's end, a lease's expiry), bounded
        by the safety-net interval."""
        return max(0.0, min(self.max_idle, self._next_due - time.monotonic()))

    def _drain(self) -> None:
        deadline = time.monotonic() + self.grace_seconds
        while self._inflight and time.monotonic() < deadline:
            self._wake.wait(0.05)
        if self._inflight:
            logger.warning(
                "worker %s: %d run(s) still busy after %.0fs; handing them back",
                self.owner,
                self._inflight,
                self.grace_seconds,
            )

    def _run_batch(self, claimed: list[Execution]) -> list[tuple[Execution, list | None]]:
        """The pure runs of a claim, run and written at once on this thread; the rest (with
        what was read for them) for the pool."""
        if not claimed:
            return []
        try:
            leftover = batch.run_batch(claimed, owner=self.owner, worker=self)
        except Exception:  # noqa: BLE001 - then each run goes to a thread, as without batching
            logger.exception("worker %s: a batch failed", self.owner)
            close_old_connections()
            return [(execution, None) for execution in claimed]
        handed = {execution.pk for execution, _ in leftover}
        finished = 0
        for execution in claimed:
            if execution.pk not in handed:
                self.unhold(str(execution.pk))
                finished += 1
        with self._inflight_lock:
            self.completed += finished
        if finished and not self._batch_credit:
            wakeup.room_changed()  # pure runs may be claimed again with every thread busy
        self._batch_credit = finished
        return leftover

    def _run(self, execution: Execution, rows: list | None = None) -> None:
        key = str(execution.pk)
        try:
            with self._gate.held():
                runner.run_claimed(execution, owner=self.owner, worker=self, rows=rows)
        except BaseException:  # noqa: BLE001 - a run must never take the worker down
            logger.exception("execution %s: the runner failed", key)
        finally:
            self.unhold(key)
            with self._inflight_lock:
                self._inflight -= 1
                self.completed += 1
            self._wake.set()
            wakeup.room_changed()  # room again: this process takes due-now tokens
            close_old_connections()

    # --- maintenance -----------------------------------------------------------------------------

    def _maintain(self, side_pool: ThreadPoolExecutor) -> None:
        now = time.monotonic()
        next_renew = now
        next_side = now
        next_timers = now
        next_purge = now + 60.0
        while not self._stopped.is_set():
            now = time.monotonic()
            try:
                self.poll_held()
                if now >= next_renew:
                    self._keeper.renew(owner=self.owner, execution_ids=self.held())
                    next_renew = now + max(0.5, settings.LEASE_SECONDS / 3)
                if now >= next_side and not self.stopping:
                    self._side_work(side_pool)
                    next_side = now + SIDE_WORK_SECONDS
                if now >= next_timers and not self.stopping:
                    checkpoints.expire_due()
                    next_timers = now + settings.REAPER_INTERVAL_SECONDS
                if now >= next_purge and not self.stopping:
                    retention.purge()
                    next_purge = now + PURGE_INTERVAL_SECONDS
            except Exception:  # noqa: BLE001 - maintenance must keep going
                logger.exception("worker maintenance failed")
                close_old_connections()
            connections.close_all()  # back to the pool between ticks
            self._stopped.wait(MAINTENANCE_TICK_SECONDS)
        self._keeper.close()
        connections.close_all()

    def renew_leases(self) -> int:
        return self._keeper.renew(owner=self.owner, execution_ids=self.held())

    # --- side work (django.tasks: engine/sidework.py) ---------------------------------------

    def _side_work(self, side_pool: ThreadPoolExecutor) -> None:
        rows = sidework.take(
            backend=self.backend, queues=self.queues, owner=self.owner, limit=SIDE_WORK_THREADS
        )
        for row in rows:
            side_pool.submit(sidework.run, row)


def _server_loop() -> Any:
    """The event loop this thread was started from (embedded topology), if any."""
    if getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) != os.getpid():
        return None
    return getattr(SyncToAsync.threadlocal, "main_event_loop", None)
