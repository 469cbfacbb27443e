"""The execution row is the run queue (DESIGN.md §6).

An execution is runnable when it is pending or running, its `runnable_at` has come, and its
lease is free or expired. A worker claims a batch in one statement; the lease (`lease_owner`,
`lease_expires_at`) is the one and only record of who runs it, renewed in one statement for
all the runs a process holds. An expired lease is simply claimable again: there is no reaper.

Whatever makes an execution runnable (a start, a decision, an answer, a child's end, a
sleep's end, a hand-back) sets `runnable_at` in its own transaction and calls `wake()` on
commit, which tells idle workers (in-process event, and Redis pub/sub between processes).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Q, When
from django.utils import timezone

from executions import bulk
from executions.engine import tokens, wakeup
from executions.models import Execution

TABLE = Execution._meta.db_table
# Literal, not parameters: the planner can then match the partial index `exec_runnable`.
LIVE_STATUSES = ("pending", "running")
LIVE = "status IN ('pending', 'running') AND runnable_at IS NOT NULL"


def lease_until(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(seconds=settings.LEASE_SECONDS)


def claim(*, owner: str, limit: int) -> list[Execution]:
    """Lease up to `limit` runnable executions to `owner`, oldest due first, in one statement.

    PostgreSQL: the inner SELECT … FOR UPDATE SKIP LOCKED lets concurrent claimers pass over
    each other's rows instead of queueing on them. SQLite has one writer at a time: the UPDATE
    runs in an IMMEDIATE transaction (settings), so two claimers never read the same free rows.
    """
    if limit <= 0:
        return []
    now = timezone.now()
    postgres = connection.vendor == "postgresql"
    sql = _claim_sql.get(connection.vendor) or _claim_sql.setdefault(connection.vendor, _claim())
    params = [owner, lease_until(now), now, now, int(limit)]
    if postgres:
        return _rows(sql, params)
    with transaction.atomic():  # IMMEDIATE on SQLite (settings): one claimer at a time
        return _rows(sql, params)


def _claim() -> str:
    """The claim's statement on this connection's database (the same text every time)."""
    postgres = connection.vendor == "postgresql"
    skip_locked = (
        " FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else ""
    )
    # PostgreSQL: the lease needs no disk flush before the worker goes on. If the database
    # lost it in a crash, the row is simply claimable again, and this worker's writes (each a
    # compare-and-set on its lease, committed with a flush) are refused. set_config(…, true)
    # turns the flush off for this statement's own transaction only, without a round trip of
    # its own (docs/decisions.md, "Engine").
    no_flush = " AND set_config('synchronous_commit', 'off', true) IS NOT NULL" if postgres else ""
    return (
        f"UPDATE {TABLE} SET lease_owner = %s, lease_expires_at = %s WHERE id IN ("
        f"SELECT id FROM {TABLE} WHERE {LIVE} AND runnable_at <= %s"
        f" AND (lease_owner = '' OR lease_expires_at < %s)"
        f" ORDER BY runnable_at LIMIT %s{skip_locked}){no_flush} RETURNING {_returning()}"
    )


# Per database vendor: the claim's statement, built once (it was built per claim).
_claim_sql: dict[str, str] = {}


def _returning() -> str:
    return ", ".join(connection.ops.quote_name(f.column) for f in Execution._meta.concrete_fields)


def _rows(sql: str, params: list) -> list[Execution]:
    """The claimed rows as Executions, built as the ORM builds them (each column through its
    converters, then Model.from_db) but with the column order and converters worked out once
    per database, not per claim: Execution.objects.raw() did that every time, ~0.5 ms of an
    idle run's latency on PostgreSQL (docs/performance-history.md, "Engine")."""
    key = (connection.alias, connection.vendor)
    converters = _converters.get(key)
    if converters is None:
        converters = []
        for i, field in enumerate(Execution._meta.concrete_fields):
            col = field.get_col(TABLE)
            found = connection.ops.get_db_converters(col) + col.get_db_converters(connection)
            if found:
                converters.append((i, found, col))
        _converters[key] = converters
    with bulk.prepared_cursor() as cursor:  # planned once per connection
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    claimed = []
    for row in rows:
        values = list(row)
        for i, found, col in converters:
            for convert in found:
                values[i] = convert(values[i], col, connection)
        claimed.append(Execution.from_db(connection.alias, _ATTNAMES, values))
    return claimed


_ATTNAMES = [f.attname for f in Execution._meta.concrete_fields]
# Per (database alias, vendor): (position in RETURNING, converters, column) of each column
# that has converters.
_converters: dict[tuple[str, str], list[tuple[int, list, Any]]] = {}


def claim_one(execution_id: Any, *, owner: str) -> bool:
    """Take the lease of one execution if it is free, expired or already ours (a direct run:
    tests and `runner.run`). Not bound to `runnable_at`: the caller asks for this one."""
    now = timezone.now()
    return bool(
        Execution.objects.filter(pk=execution_id, status__in=LIVE_STATUSES)
        .filter(Q(lease_owner="") | Q(lease_expires_at__lt=now) | Q(lease_owner=owner))
        .update(lease_owner=owner, lease_expires_at=lease_until(now))
    )


def renew(*, owner: str, execution_ids: list[str]) -> int:
    """Extend the leases of every run this process holds, in one statement."""
    if not execution_ids:
        return 0
    return Execution.objects.filter(pk__in=execution_ids, lease_owner=owner).update(
        lease_expires_at=lease_until()
    )


class LeaseKeeper:
    """The maintenance tick's own database connection, outside the pool (PostgreSQL with
    DB_POOL): renewing the leases and polling the held runs never wait behind the runs for a
    pooled connection. With 1,000 runs in flight on a pool of 16, that wait outlasted the
    pool's timeout and leases were lost (docs/performance-history.md, "Engine"). Elsewhere (SQLite,
    no pool) the thread's usual connection does it."""

    def __init__(self) -> None:
        self._conn: Any = None

    def _cursor(self) -> Any:
        if connection.vendor != "postgresql" or not connection.settings_dict.get("OPTIONS", {}).get(
            "pool"
        ):
            return None
        if self._conn is None or self._conn.closed:
            params = connection.get_connection_params()  # as Django's own, minus the pool
            self._conn = connection.Database.connect(**params)
            self._conn.autocommit = True
        return self._conn.cursor()

    def renew(self, *, owner: str, execution_ids: list[str]) -> int:
        if not execution_ids:
            return 0
        cursor = self._run(
            f"UPDATE {TABLE} SET lease_expires_at = %s WHERE id = ANY(%s) AND lease_owner = %s",
            [lease_until(), [uuid.UUID(str(i)) for i in execution_ids], owner],
        )
        if cursor is None:
            return renew(owner=owner, execution_ids=execution_ids)
        return cursor.rowcount

    def states(self, execution_ids: list[str]) -> list[tuple[Any, str, str]]:
        """(id, status, lease owner) of each execution still there."""
        cursor = self._run(
            f"SELECT id, status, lease_owner FROM {TABLE} WHERE id = ANY(%s)",
            [[uuid.UUID(str(i)) for i in execution_ids]],
        )
        if cursor is None:
            return list(
                Execution.objects.filter(pk__in=execution_ids).values_list(
                    "pk", "status", "lease_owner"
                )
            )
        return cursor.fetchall()

    def _run(self, sql: str, params: list) -> Any:
        try:
            cursor = self._cursor()
            if cursor is not None:
                cursor.execute(sql, params)
            return cursor
        except Exception:
            self.close()  # reconnect on the next tick
            raise

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None


def release(
    execution_id: Any, *, owner: str, at: datetime | None = None, fields: dict | None = None
) -> int:
    """Give the lease back and make the run claimable at `at` (now by default); wakes workers
    on commit."""
    released = Execution.objects.filter(pk=execution_id, lease_owner=owner).update(
        lease_owner="", lease_expires_at=None, runnable_at=at or timezone.now(), **(fields or {})
    )
    if released:
        transaction.on_commit(lambda: wake(at=at))
    return released


def release_reclaimed(execution_id: Any, *, owner: str) -> int:
    """A claim took the row of a run still on its thread here (engine/holdings.py); the
    thread has let go: give the lease back, its due time unchanged, so that it runs again. A
    no-op when the run parked, ended or was handed back meanwhile (its lease is not ours)."""
    released = Execution.objects.filter(
        pk=execution_id, lease_owner=owner, status__in=LIVE_STATUSES
    ).update(lease_owner="", lease_expires_at=None)
    if released:
        wake()
    return released


def release_all(*, owner: str) -> int:
    """At exit: whatever this process still holds is runnable again at once."""
    released = Execution.objects.filter(lease_owner=owner).update(
        lease_owner="", lease_expires_at=None, runnable_at=timezone.now()
    )
    if released:
        wake()
    return released


def make_runnable(execution_id: Any, *, at: datetime | None = None) -> None:
    """Inside the caller's transaction: the execution becomes runnable at `at` (now by
    default); workers are woken once it commits."""
    Execution.objects.filter(pk=execution_id).update(runnable_at=at or timezone.now())
    transaction.on_commit(lambda: wake(at=at))


def seconds_until_due(*, cap: float) -> float:
    """How long an idle worker may sleep before something becomes claimable without a
    wake-up: a sleep that ends, or a lease that expires (its worker died). At most `cap`."""
    due = (
        Execution.objects.filter(status__in=LIVE_STATUSES, runnable_at__isnull=False)
        .annotate(
            due=Case(When(lease_owner="", then=F("runnable_at")), default=F("lease_expires_at"))
        )
        .order_by("due")
        .values_list("due", flat=True)
        .first()
    )
    if due is None:
        return cap
    return max(0.0, min(cap, (due - timezone.now()).total_seconds()))


def wake(at: datetime | None = None, *, fresh: Execution | None = None) -> None:
    """Wake the workers: something is runnable now, or (with a future `at`) will be then.
    `fresh`: the start just committed, whose row the wake-up may carry (engine/tokens.py)."""
    if at is not None and at <= timezone.now():
        at = None
    if fresh is not None and at is None:
        wakeup.notify(None, tokens.token_of(fresh))
    else:
        wakeup.notify(at)
