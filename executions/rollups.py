"""Per-hour rollups of ended executions (ExecutionRollup): the lifecycle adds each run as it
ends, in the same transaction, and retention takes out what it purges. The stats selectors read
them (executions/selectors/stats.py).

Hours older than FOLD_AFTER are folded into one row per (workspace, agent, status, day) by
retention (`rollup_fold`), so "all time" reads ~50 rows per agent and status per day kept
instead of ~24 x 4 shards. A day row is keyed at midnight UTC; a run ending late in a folded
day just starts a new hour row beside it (readers only ever sum rows). Readers ask for hours
only for windows that start within HOURLY_WINDOW, where nothing is folded yet.

Beside them, DurationRollup counts the same runs' durations per (workspace, agent, day,
bucket) — a histogram the overview reads its per-agent percentiles from (`histogram_percentile`)
— written in the same transaction with one multi-row upsert, and taken out by retention."""

from __future__ import annotations

import random
import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import Count, Q, Sum
from django.db.models.functions import TruncDate, TruncHour
from django.utils import timezone

from executions import bulk
from executions.models import DurationRollup, Execution, ExecutionRollup

# lifecycle.TERMINAL, spelled out: the lifecycle imports this module, not the other way round.
TERMINAL = ("completed", "failed", "cancelled", "rejected")


ROLLUP_SHARDS = 4
# Where this process's next batch adds its runs (count_ended_many): a random start, so two
# worker processes do not walk the shards in step.
_next_shard = random.randrange(ROLLUP_SHARDS)
_shard_lock = threading.Lock()
FOLD_AFTER = timedelta(days=3)  # hour rows of days ended before now - this fold into days
HOURLY_WINDOW = timedelta(days=2)  # windows starting after now - this may read hours
# Duration buckets per doubling: each bucket [lo, hi) is at most lo / 8 wide (exact below 16 ms).
# 8 rather than 16: the overview sums a week of (agent, day, bucket) rows, ~2,900 instead of
# ~5,800 for 12 agents at 1M runs (3 vs 9 ms); the percentile is interpolated within its bucket.
SUB_BITS = 3
SUB_BUCKETS = 1 << SUB_BITS


def count_ended(execution: Execution, *, status: str, created_at: Any, updates: dict) -> None:
    """Add a run that just ended to its (workspace, agent, status, hour) rollup, in the same
    transaction: stats and the overview then read rollups, never the whole history."""
    cost = updates.get("cost", execution.cost)
    if hasattr(cost, "resolve_expression"):  # an F() expression: the row knows the sum
        cost = Execution.objects.filter(pk=execution.pk).values_list("cost", flat=True).first()
    costed = 1 if cost is not None and cost > 0 else 0
    rollup_add(
        workspace_id=execution.workspace_id,
        agent_id=execution.agent_id,
        status=status,
        hour=created_at.replace(minute=0, second=0, microsecond=0),
        shard=execution.pk.int % ROLLUP_SHARDS,
        count=1,
        costed=costed,
        cost=cost if costed else Decimal(0),
        duration_ms=updates.get("duration_ms") or 0,
    )
    duration = updates.get("duration_ms")
    if duration is not None:
        key = _duration_key(execution, created_at, duration, execution.pk.int % ROLLUP_SHARDS)
        durations_add({key: 1})


def count_ended_many(ended: list[tuple[Execution, str, Any, dict]]) -> None:
    """`count_ended` for a batch of runs that ended in one transaction (the engine's group
    commit): summed per rollup row first, then one upsert for all rows, in key order, so two
    batches ending at once lock their common rows in the same order (no deadlock).

    A batch adds all its runs to ONE shard, the next in this process's rotation (only the sum
    over a key's shards means anything): spread by execution id, every batch of 64 would lock
    all the shards of its key until its commit, and the batches of two workers would commit
    one after the other."""
    rows, durations = ended_sums(ended)
    rollups_upsert(rows)
    durations_add(durations)


def ended_sums(ended: list[tuple[Execution, str, Any, dict]]) -> tuple[dict, dict]:
    """count_ended_many's amounts, not written: (rollup rows for rollups_upsert, duration
    counts for durations_add), all on the next shard of this process's rotation."""
    global _next_shard
    with _shard_lock:
        shard = _next_shard
        _next_shard = (_next_shard + 1) % ROLLUP_SHARDS
    sums: dict[tuple, dict[str, Any]] = {}
    durations: dict[tuple, int] = {}
    for execution, status, created_at, updates in ended:
        if updates.get("duration_ms") is not None:
            key = _duration_key(execution, created_at, updates["duration_ms"], shard)
            durations[key] = durations.get(key, 0) + 1
        cost = updates.get("cost", execution.cost)
        costed = 1 if cost is not None and cost > 0 else 0
        key = (
            str(execution.workspace_id),
            str(execution.agent_id),
            status,
            created_at.replace(minute=0, second=0, microsecond=0),
            shard,
        )
        into = sums.setdefault(
            key,
            {
                "workspace_id": execution.workspace_id,
                "agent_id": execution.agent_id,
                "amounts": {"count": 0, "costed": 0, "cost": Decimal(0), "duration_ms": 0},
            },
        )
        amounts = into["amounts"]
        amounts["count"] += 1
        amounts["costed"] += costed
        amounts["cost"] += Decimal(cost) if costed else Decimal(0)
        amounts["duration_ms"] += updates.get("duration_ms") or 0
    rows = {
        (into["workspace_id"], key[3], into["agent_id"], key[2], key[4]): into["amounts"]
        for key, into in sums.items()
    }
    return rows, durations


def upserts_sql(rows: dict[tuple, dict[str, Any]], durations: dict[tuple, int], *, where: str
                ) -> list[tuple[str, list[Any]]]:  # fmt: skip
    """rollups_upsert's and durations_add's statements (PostgreSQL), each adding only where
    `where` holds — a condition on the other CTEs of the statement they are composed into
    (the engine's one-statement write of a run's end: lifecycle_batch.append_alone)."""
    parts = []
    if rows:
        meta = ExecutionRollup._meta
        fields = [meta.get_field(n) for n in ("workspace", "hour", "agent", "status", "shard")]
        fields += [meta.get_field(n) for n in _AMOUNTS]
        ordered = sorted(rows, key=lambda k: (str(k[0]), k[1], str(k[2]), k[3], k[4]))
        values = [[*key, *(rows[key].get(n, 0) for n in _AMOUNTS)] for key in ordered]
        parts.append((_ROLLUP_UPSERT, meta.db_table, fields, values))
    if durations:
        meta = DurationRollup._meta
        fields = [meta.get_field(n) for n in ("workspace", "day", "agent", "bucket", "shard")]
        fields.append(meta.get_field("count"))
        ordered = sorted(durations, key=lambda k: (str(k[0]), k[1], str(k[2]), k[3], k[4]))
        values = [[*key, durations[key]] for key in ordered]
        parts.append((_UPSERT, meta.db_table, fields, values))
    out = []
    for template, table, fields, values in parts:
        # Prepared as the plain upserts prepare them (get_db_prep_value: no save-only steps).
        prepared = [
            [f.get_db_prep_value(v, connection) for f, v in zip(fields, row, strict=True)]
            for row in values
        ]
        key = (table, where, len(prepared))
        sql = _upsert_texts.get(key)
        if sql is None:
            head, _, conflict = template.partition(" VALUES {rows}")
            values_part = bulk.values_text(fields, len(prepared))
            cols = ", ".join(f"c{j}" for j in range(len(fields)))
            sql = _upsert_texts[key] = (
                f"{head.format(table=table)} SELECT {cols} FROM {values_part} AS r ({cols})"
                f" WHERE {where}{conflict.format(table=table)}"
            )
        out.append((sql, [value for row in prepared for value in row]))
    return out


# upserts_sql's text per (table, condition, number of rows): the same for every run's end.
_upsert_texts: dict[tuple[str, str, int], str] = {}


def rollup_add(*, workspace_id: Any, agent_id: Any, status: str, hour: Any, shard: int = 0,
               **amounts: Any) -> None:  # fmt: skip
    """Add `amounts` (count, costed, cost, duration_ms; negative to subtract) to one rollup row."""
    rollups_upsert({(workspace_id, hour, agent_id, status, shard): amounts})


_AMOUNTS = ("count", "costed", "cost", "duration_ms")
_ROLLUP_UPSERT = (
    "INSERT INTO {table} (workspace_id, hour, agent_id, status, shard, count, costed, cost,"
    " duration_ms) VALUES {rows} ON CONFLICT (workspace_id, hour, agent_id, status, shard)"
    " DO UPDATE SET count = {table}.count + excluded.count,"
    " costed = {table}.costed + excluded.costed, cost = {table}.cost + excluded.cost,"
    " duration_ms = {table}.duration_ms + excluded.duration_ms"
)


def rollups_upsert(rows: dict[tuple, dict[str, Any]]) -> None:
    """Add amounts to ExecutionRollup rows keyed (workspace, hour, agent, status, shard), in the
    caller's transaction: one INSERT … ON CONFLICT DO UPDATE for all of them (PostgreSQL and
    SQLite), in key order so two transactions lock their common rows in the same order. No
    savepoint and no ORM compile on the engine's hot path: a row's first insert by a concurrent
    transaction turns this one's into an update."""
    if not rows:
        return
    meta = ExecutionRollup._meta
    keys = [meta.get_field(n) for n in ("workspace", "hour", "agent", "status", "shard")]
    values = [meta.get_field(n) for n in _AMOUNTS]
    params: list[Any] = []
    for key in sorted(rows, key=lambda k: (str(k[0]), k[1], str(k[2]), k[3], k[4])):
        amounts = rows[key]
        params += [f.get_db_prep_save(v, connection) for f, v in zip(keys, key, strict=True)]
        params += [f.get_db_prep_save(amounts.get(f.name, 0), connection) for f in values]
    sql = _ROLLUP_UPSERT.format(
        table=meta.db_table, rows=", ".join([f"({', '.join(['%s'] * 9)})"] * len(rows))
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def rollup_forget(execution_ids: list[Any]) -> None:
    """Take executions about to be deleted (retention) out of their rollups, in the caller's
    transaction, so stats count what is kept. Subtracted from shard 0: only the sum over a
    key's shards means anything."""
    ended = (
        Execution.objects.filter(pk__in=execution_ids, status__in=TERMINAL)
        .annotate(bucket=TruncHour("created_at"))
        .values("workspace_id", "agent_id", "status", "bucket")
        .annotate(
            n=Count("id"),
            costed=Count("id", filter=Q(cost__gt=0)),
            total=Sum("cost", filter=Q(cost__gt=0)),
            ms=Sum("duration_ms"),
        )
        .order_by()
    )
    for row in ended:
        rollup_add(
            workspace_id=row["workspace_id"],
            agent_id=row["agent_id"],
            status=row["status"],
            hour=row["bucket"],
            count=-row["n"],
            costed=-row["costed"],
            cost=-(row["total"] or 0),
            duration_ms=-(row["ms"] or 0),
        )
    durations: dict[tuple, int] = {}
    timed = Execution.objects.filter(
        pk__in=execution_ids, status__in=TERMINAL, duration_ms__isnull=False
    ).values_list("workspace_id", "agent_id", "created_at", "duration_ms")
    for workspace_id, agent_id, created_at, duration in timed:
        key = (workspace_id, utc_day(created_at), agent_id, duration_bucket(duration), 0)
        durations[key] = durations.get(key, 0) - 1
    durations_add(durations)


def rollup_fold(*, now: datetime | None = None) -> int:
    """Fold the hour rows of each day that ended before now - FOLD_AFTER into that day's row
    (midnight UTC, shard 0), one day per transaction; returns the rows folded away. The rows
    are locked first, so a run ending meanwhile either lands before the fold (and is summed)
    or finds its hour row gone and starts a new one."""
    boundary = midnight((now or timezone.now()) - FOLD_AFTER)
    loose = ExecutionRollup.objects.filter(hour__lt=boundary).filter(
        ~Q(hour__hour=0) | Q(shard__gt=0)
    )
    days = sorted(set(loose.annotate(day=TruncDate("hour")).values_list("day", flat=True)))
    folded = 0
    for day in days:
        start = datetime(day.year, day.month, day.day, tzinfo=boundary.tzinfo)
        with transaction.atomic():
            rows = list(
                ExecutionRollup.objects.select_for_update()
                .filter(hour__gte=start, hour__lt=start + timedelta(days=1))
                .filter(~Q(hour__hour=0) | Q(shard__gt=0))
            )
            sums: dict[tuple, dict[str, Any]] = {}
            for row in rows:
                into = sums.setdefault(
                    (row.workspace_id, row.agent_id, row.status),
                    {"count": 0, "costed": 0, "cost": Decimal(0), "duration_ms": 0},
                )
                for field in into:
                    into[field] += getattr(row, field)
            ExecutionRollup.objects.filter(pk__in=[row.pk for row in rows]).delete()
            for (workspace_id, agent_id, status), amounts in sums.items():
                rollup_add(workspace_id=workspace_id, agent_id=agent_id, status=status,
                           hour=start, **amounts)  # fmt: skip
        folded += len(rows)
    return folded


def midnight(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


# --- durations ----------------------------------------------------------------------------------


def duration_bucket(ms: int) -> int:
    """The histogram bucket of a duration in ms: the value itself below 16, then 8 buckets per
    doubling (the duration's top four bits). bench/scale_sql.py computes the same in SQL."""
    ms = max(0, int(ms))
    if ms < 2 * SUB_BUCKETS:
        return ms
    shift = ms.bit_length() - SUB_BITS - 1
    return SUB_BUCKETS * shift + (ms >> shift)


def bucket_bounds(bucket: int) -> tuple[int, int]:
    """[lo, hi) of the durations in `bucket` (the inverse of duration_bucket)."""
    if bucket < 2 * SUB_BUCKETS:
        return bucket, bucket + 1
    shift, top = divmod(bucket, SUB_BUCKETS)
    return (top + SUB_BUCKETS) << (shift - 1), (top + SUB_BUCKETS + 1) << (shift - 1)


def histogram_percentile(buckets: list[tuple[int, int]], total: int, q: float) -> int:
    """The q-th percentile of `total` durations counted in (bucket, count) rows sorted by
    bucket: the bucket holding the value of rank ceil(q * total) (the rank percentile_disc and
    the exact selector use), and within it a value interpolated by rank — so the result is in
    the same bucket as the exact percentile, i.e. within 1/8 of it (exact below 16 ms)."""
    rank = percentile_rank(total, round(q * 100))
    before = 0
    for bucket, count in buckets:
        if before + count >= rank:
            return within_bucket(bucket, count, rank - before)
        before += count
    return bucket_bounds(buckets[-1][0])[0] if buckets else 0


def percentile_rank(total: int, percent: int) -> int:
    """ceil(percent / 100 * total) in integers (exact, as the SQL that finds its bucket)."""
    return max(1, -(-percent * total // 100))


def within_bucket(bucket: int, count: int, position: int) -> int:
    """The value of the `position`-th (1-based) of `count` durations in `bucket`, spread
    evenly over it."""
    lo, hi = bucket_bounds(bucket)
    return lo + int((hi - lo) * (min(max(position, 1), count) - 0.5) / count)


def utc_day(created_at: datetime) -> Any:
    return created_at.astimezone(UTC).date() if created_at.tzinfo else created_at.date()


def _duration_key(execution: Execution, created_at: datetime, duration: Any, shard: int) -> tuple:
    if hasattr(duration, "resolve_expression"):  # an F() expression: the row knows the value
        duration = (
            Execution.objects.filter(pk=execution.pk).values_list("duration_ms", flat=True).first()
        )
    return (
        execution.workspace_id,
        utc_day(created_at),
        execution.agent_id,
        duration_bucket(duration or 0),
        shard,
    )


_UPSERT = (
    "INSERT INTO {table} (workspace_id, day, agent_id, bucket, shard, count) VALUES {rows}"
    " ON CONFLICT (workspace_id, day, agent_id, bucket, shard)"
    " DO UPDATE SET count = {table}.count + excluded.count"
)


def durations_add(counts: dict[tuple, int]) -> None:
    """Add counts to DurationRollup rows keyed (workspace, day, agent, bucket, shard), in the
    caller's transaction: one INSERT … ON CONFLICT DO UPDATE for all of them (PostgreSQL and
    SQLite alike), rows in key order so two transactions lock their common rows in the same
    order, and no savepoint (a concurrent first insert of a row turns into an update)."""
    if not counts:
        return
    fields = [DurationRollup._meta.get_field(name) for name in ("workspace", "day", "agent")]
    params: list[Any] = []
    for key in sorted(counts, key=lambda k: (str(k[0]), k[1], str(k[2]), k[3], k[4])):
        prepared = [f.get_db_prep_value(v, connection) for f, v in zip(fields, key, strict=False)]
        params += [*prepared, key[3], key[4], counts[key]]
    sql = _UPSERT.format(
        table=DurationRollup._meta.db_table,
        rows=", ".join(["(%s, %s, %s, %s, %s, %s)"] * len(counts)),
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
