"""The worker: claims queued tasks (django-tasks-db rows) and runs up to N at once on threads.

Executions mostly wait on model I/O, so one process runs many at once. The claim is a
`SELECT … FOR UPDATE SKIP LOCKED` (an exclusive transaction on SQLite), so any number of worker
processes can share the queue. An idle worker waits on a wake-up (in-process event, or Redis
pub/sub) and otherwise polls every `poll_interval` seconds, which also picks up `run_after`
tasks (sleeping executions).

A maintenance thread renews the leases of the executions this process is running, reaps
executions whose lease expired (their worker died) by queueing them again, wakes parents whose
child ended without waking them, resolves expired approvals, and purges by retention.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import OperationalError, close_old_connections, connections
from django.utils import timezone

from executions.engine import context, runner, wakeup

logger = logging.getLogger("steward.worker")

PURGE_INTERVAL_SECONDS = 3600.0


def default_queues() -> list[str]:
    return list(settings.TASKS["default"].get("QUEUES") or ["executions"])


class Worker:
    def __init__(
        self,
        *,
        concurrency: int = 1,
        name: str = "worker",
        queues: list[str] | None = None,
        poll_interval: float = 1.0,
        backend: str = "default",
        maintenance: bool = True,
        grace_seconds: float = 30.0,
    ) -> None:
        self.concurrency = max(1, int(concurrency))
        self.name = name
        self.queues = list(queues or default_queues())
        self.poll_interval = poll_interval
        self.backend = backend
        self.maintenance = maintenance
        self.grace_seconds = grace_seconds
        self.owner = f"{name}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"[:120]
        self.stopping = False
        self._held: set[str] = set()
        self._held_lock = threading.Lock()
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self._wake = wakeup.subscribe()
        # Why a held execution must stop (cancelled, lease lost), from one poll for all of them.
        self._stop_reasons: dict[str, str] = {}
        self._stopped = threading.Event()
        self.completed = 0

    # --- the executions this process holds ------------------------------------------------

    def hold(self, execution_id: str) -> None:
        with self._held_lock:
            self._held.add(execution_id)

    def unhold(self, execution_id: str) -> None:
        with self._held_lock:
            self._held.discard(execution_id)
            self._stop_reasons.pop(execution_id, None)

    def stop_reason(self, execution_id: str) -> str | None:
        return self._stop_reasons.get(execution_id)

    def poll_held(self) -> None:
        """One query for every execution this process runs: note the cancelled ones and those
        whose lease another worker took, so their runs stop (and close model calls) at once."""
        from executions.lifecycle import TERMINAL
        from executions.models import Execution

        held = self.held()
        if not held:
            return
        rows = Execution.objects.filter(pk__in=held).values_list("pk", "status", "lease_owner")
        seen = set()
        for pk, status, owner in rows:
            key = str(pk)
            seen.add(key)
            if status in TERMINAL:
                self._stop_reasons[key] = "cancelled"
            elif owner != self.owner:
                self._stop_reasons[key] = "lease_lost"
        for key in set(held) - seen:
            self._stop_reasons[key] = "cancelled"  # deleted (purged) under us

    def held(self) -> list[str]:
        with self._held_lock:
            return list(self._held)

    @property
    def inflight(self) -> int:
        return self._inflight

    def stop(self) -> None:
        """Stop claiming; running executions hand back at their next step boundary."""
        if not self.stopping:
            logger.info("worker %s stopping (%d in flight)", self.owner, self._inflight)
        self.stopping = True
        self._wake.set()

    # --- the loop -------------------------------------------------------------------------------

    def run(self) -> None:
        bind = context.loop_binding()
        server_loop = _server_loop()
        wakeup.start_listener()
        logger.info(
            "worker %s started (concurrency %d, queues %s)",
            self.owner,
            self.concurrency,
            ",".join(self.queues),
        )
        pool = ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix=self.name, initializer=bind
        )
        maintenance = None
        if self.maintenance:
            maintenance = threading.Thread(
                target=self._maintain, name=f"{self.name}-maintenance", daemon=True
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
                free = self.concurrency - self._inflight
                claimed = self.claim(free) if free > 0 else []
                for row in claimed:
                    with self._inflight_lock:
                        self._inflight += 1
                    pool.submit(self._run_task, row)
                if len(claimed) < free or free <= 0:
                    # Drained the queue (or full): sleep until woken or the poll interval.
                    self._wake.wait(self.poll_interval)
        finally:
            self.stopping = True
            self._drain()
            # Idle pool threads exit now and their database connections with them; a run still
            # stuck in a blocking call is left behind (its lease will expire).
            pool.shutdown(wait=self._inflight == 0, cancel_futures=True)
            wakeup.unsubscribe(self._wake)
            self._stopped.set()
            connections.close_all()
            logger.info("worker %s stopped", self.owner)

    def _drain(self) -> None:
        deadline = time.monotonic() + self.grace_seconds
        while self._inflight and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._inflight:
            logger.warning(
                "worker %s: %d run(s) still busy after %.0fs; their leases will expire",
                self.owner,
                self._inflight,
                self.grace_seconds,
            )

    def claim(self, limit: int) -> list[Any]:
        from django_tasks_db.compat import TaskResultStatus
        from django_tasks_db.models import DBTaskResult
        from django_tasks_db.utils import exclusive_transaction

        close_old_connections()
        ready = DBTaskResult.objects.ready().filter(
            backend_name=self.backend, queue_name__in=self.queues
        )
        try:
            with exclusive_transaction(ready.db):
                rows = list(ready.select_for_update(skip_locked=True)[:limit])
                if rows:
                    DBTaskResult.objects.filter(pk__in=[r.pk for r in rows]).update(
                        status=TaskResultStatus.RUNNING,
                        started_at=timezone.now(),
                        worker_ids=[self.owner[:64]],
                    )
        except OperationalError as exc:
            if "locked" in str(exc).lower():
                return []
            raise
        return rows

    def _run_task(self, row: Any) -> None:
        from django_tasks_db.compat import TaskResultStatus
        from django_tasks_db.models import DBTaskResult

        runner.bind(self)
        try:
            task = row.task
            args = row.args_kwargs
            if task.takes_context:
                from django_tasks_db.compat import TaskContext

                task.call(TaskContext(task_result=row.task_result), *args["args"], **args["kwargs"])
            else:
                task.call(*args["args"], **args["kwargs"])
            DBTaskResult.objects.filter(pk=row.pk).update(
                status=TaskResultStatus.SUCCESSFUL, finished_at=timezone.now()
            )
        except BaseException as exc:  # noqa: BLE001 - recorded on the task row
            logger.exception("task %s (%s) failed", row.pk, row.task_path)
            try:
                row.set_failed(exc)
            except Exception:  # noqa: BLE001
                logger.exception("could not mark task %s failed", row.pk)
        finally:
            runner.bind(None)
            if self.stopping:
                connections.close_all()
            with self._inflight_lock:
                self._inflight -= 1
                self.completed += 1
            self._wake.set()
            close_old_connections()

    # --- maintenance -----------------------------------------------------------------------------

    def _maintain(self) -> None:
        renew_every = max(0.5, settings.LEASE_SECONDS / 3)
        reap_every = settings.REAPER_INTERVAL_SECONDS
        next_renew = next_reap = time.monotonic()
        next_purge = time.monotonic() + 60.0
        while not self.stopping:
            now = time.monotonic()
            try:
                self.poll_held()
                if now >= next_renew:
                    self.renew_leases()
                    next_renew = now + renew_every
                if now >= next_reap:
                    reap()
                    next_reap = now + reap_every
                if now >= next_purge:
                    from executions.engine import retention

                    retention.purge()
                    next_purge = now + PURGE_INTERVAL_SECONDS
            except Exception:  # noqa: BLE001 - maintenance must keep going
                logger.exception("worker maintenance failed")
                close_old_connections()
            connections.close_all()  # back to the pool between ticks
            self._stopped.wait(0.25)
        connections.close_all()

    def renew_leases(self) -> int:
        from executions.models import Execution

        held = self.held()
        if not held:
            return 0
        until = timezone.now() + timedelta(seconds=settings.LEASE_SECONDS)
        return Execution.objects.filter(pk__in=held, lease_owner=self.owner).update(
            lease_expires_at=until
        )


def _server_loop() -> Any:
    """The event loop this thread was started from (embedded topology), if any."""
    from asgiref.sync import SyncToAsync

    if getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) != os.getpid():
        return None
    return getattr(SyncToAsync.threadlocal, "main_event_loop", None)


def reap(now: Any = None) -> dict[str, int]:
    """Queue again what no live worker will finish: expired leases, parents whose child has
    ended, sleepers past due; and resolve expired approvals (approvals app)."""
    from executions import tasks
    from executions.lifecycle import TERMINAL, Status
    from executions.models import Execution

    now = now or timezone.now()
    counts = {"expired_leases": 0, "parents": 0, "sleepers": 0, "approvals": 0}
    expired = list(
        Execution.objects.filter(
            status__in=[Status.PENDING, Status.RUNNING], lease_expires_at__lt=now
        )
        .exclude(lease_owner="")
        .values_list("pk", "lease_owner")[:500]
    )
    for pk, owner in expired:
        # Compare-and-set: of several reapers exactly one takes an expired lease.
        if Execution.objects.filter(pk=pk, lease_owner=owner, lease_expires_at__lt=now).update(
            lease_owner="", lease_expires_at=None
        ):
            logger.warning("reaper: execution %s lost its worker (%s); queued again", pk, owner)
            tasks.enqueue_run(pk)
            counts["expired_leases"] += 1
    settle = now - timedelta(seconds=max(2.0, settings.REAPER_INTERVAL_SECONDS))
    parked = (
        Execution.objects.filter(status=Status.RUNNING, lease_owner="", updated_at__lt=settle)
        .exclude(state__parked=None)
        .values_list("pk", "state")[:500]
    )
    for pk, state in parked:
        parked_on = (state or {}).get("parked") or {}
        if parked_on.get("kind") == "child":
            child = (
                Execution.objects.filter(pk=parked_on.get("child")).values_list("status").first()
            )
            if child is None or child[0] in TERMINAL:
                tasks.enqueue_run(pk)
                counts["parents"] += 1
        elif parked_on.get("kind") == "sleep":
            until = parked_on.get("until")
            if until and timezone.datetime.fromisoformat(until) < settle:
                tasks.enqueue_run(pk)
                counts["sleepers"] += 1
    # Checkpoints run out on time: expiries resolve per on_timeout, escalations notify again.
    from approvals import services as approval_services

    counts["approvals"] = int(approval_services.approvals_expire_due() or 0)
    counts["escalations"] = int(approval_services.approvals_escalate_due() or 0)
    return counts
