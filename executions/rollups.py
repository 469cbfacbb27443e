"""Per-hour rollups of ended executions (ExecutionRollup): the lifecycle adds each run as it
ends, in the same transaction, and retention takes out what it purges. The stats selectors read
them (executions/selectors/stats.py).

Hours older than FOLD_AFTER are folded into one row per (workspace, agent, status, day) by
retention (`rollup_fold`), so "all time" reads ~50 rows per agent and status per day kept
instead of ~24 x 4 shards. A day row is keyed at midnight UTC; a run ending late in a folded
day just starts a new hour row beside it (readers only ever sum rows). Readers ask for hours
only for windows that start within HOURLY_WINDOW, where nothing is folded yet."""

from __future__ import annotations

import random
import threading
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q, Sum
from django.db.models.functions import TruncDate, TruncHour
from django.utils import timezone

from executions.models import Execution, ExecutionRollup

# lifecycle.TERMINAL, spelled out: the lifecycle imports this module, not the other way round.
TERMINAL = ("completed", "failed", "cancelled", "rejected")


ROLLUP_SHARDS = 4
# Where this process's next batch adds its runs (count_ended_many): a random start, so two
# worker processes do not walk the shards in step.
_next_shard = random.randrange(ROLLUP_SHARDS)
_shard_lock = threading.Lock()
FOLD_AFTER = timedelta(days=3)  # hour rows of days ended before now - this fold into days
HOURLY_WINDOW = timedelta(days=2)  # windows starting after now - this may read hours


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


def count_ended_many(ended: list[tuple[Execution, str, Any, dict]]) -> None:
    """`count_ended` for a batch of runs that ended in one transaction (the engine's group
    commit): summed per rollup row first, then one UPDATE per row, in key order, so two
    batches ending at once lock their common rows in the same order (no deadlock).

    A batch adds all its runs to ONE shard, the next in this process's rotation (only the sum
    over a key's shards means anything): spread by execution id, every batch of 64 would lock
    all the shards of its key until its commit, and the batches of two workers would commit
    one after the other."""
    global _next_shard
    with _shard_lock:
        shard = _next_shard
        _next_shard = (_next_shard + 1) % ROLLUP_SHARDS
    sums: dict[tuple, dict[str, Any]] = {}
    for execution, status, created_at, updates in ended:
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
    for key in sorted(sums):
        into = sums[key]
        rollup_add(
            workspace_id=into["workspace_id"],
            agent_id=into["agent_id"],
            status=key[2],
            hour=key[3],
            shard=key[4],
            **into["amounts"],
        )


def rollup_add(*, workspace_id: Any, agent_id: Any, status: str, hour: Any, shard: int = 0,
               **amounts: Any) -> None:  # fmt: skip
    """Add `amounts` (count, costed, cost, duration_ms; negative to subtract) to one rollup row.
    An UPDATE first (the usual case, one statement); the hour's first row is created in a
    savepoint so a concurrent creator makes us update instead."""
    key = {"workspace_id": workspace_id, "agent_id": agent_id, "status": status, "hour": hour}
    increments = {field: F(field) + value for field, value in amounts.items()}
    rows = ExecutionRollup.objects.filter(**key, shard=shard)
    if rows.update(**increments):
        return
    try:
        with transaction.atomic():
            ExecutionRollup.objects.create(**key, shard=shard, **amounts)
    except IntegrityError:
        rows.update(**increments)


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
