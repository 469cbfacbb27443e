"""Aggregates for the overview, the agents page and the stats endpoint.

Ended executions are read from ExecutionRollup (counts and sums per workspace, agent, status and
hour, maintained by the lifecycle as each run ends); unfinished runs are few, and are counted
from the executions table through its status index, as are the ended runs of the partial hour
at the start of a `since` window. So a chart over a million runs reads a few hundred rows.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import (
    BooleanField,
    Case,
    Count,
    DateTimeField,
    ExpressionWrapper,
    F,
    OuterRef,
    Q,
    Subquery,
    Sum,
    When,
)
from django.db.models.functions import TruncDate, TruncHour
from django.utils import timezone

from executions import rollups
from executions.lifecycle import ACTIVE, ALL_STATUSES, TERMINAL
from executions.models import Agent, DurationRollup, Execution, ExecutionRollup, Workspace

# How each grouping reads in the rollup and in the executions table.
_ROLLUP_KEYS = {
    "status": F("status"),
    "agent_id": F("agent_id"),
    "agent_name": F("agent__name"),
    "hour": F("hour"),
    "day": TruncDate("hour"),
}
_EXECUTION_KEYS = {
    "status": F("status"),
    "agent_id": F("agent_id"),
    "agent_name": F("agent__name"),
    "hour": TruncHour("created_at"),
    "day": TruncDate("created_at"),
}


def _counts(*, workspace: Workspace, since: datetime | None, by: tuple[str, ...]) -> list[dict]:
    """Rows of `by` plus n (runs), costed (runs with a cost above 0) and cost, over the
    executions created since `since` (all of them when None)."""
    whole = None if since is None else _whole(since)
    hours = ExecutionRollup.objects.filter(workspace=workspace)
    if whole is not None:
        hours = hours.filter(hour__gte=whole)
    parts = [
        hours.annotate(**{f"k_{k}": _ROLLUP_KEYS[k] for k in by})
        .values(*[f"k_{k}" for k in by])
        .annotate(n=Sum("count"), costed=Sum("costed"), total=Sum("cost"))
        .order_by()
    ]
    live = Execution.objects.for_workspace(workspace).filter(status__in=ACTIVE)
    if since is not None:
        # The window's unfinished runs and the ended runs of its partial first hour (or day),
        # which no rollup row holds, in one read.
        live = Execution.objects.for_workspace(workspace).filter(
            Q(status__in=ACTIVE) | Q(created_at__lt=whole), created_at__gte=since
        )
    parts.append(_grouped(live, by))
    return _merge(parts, by)


def _merge(parts: list[Any], by: tuple[str, ...]) -> list[dict]:
    """Rows of k_<by> and n, costed, total from several reads, summed per key."""
    # The overview merges ~300 rows per page: the key read once, a group made only when new.
    names = [f"k_{k}" for k in by]
    merged: dict[tuple, dict[str, Any]] = {}
    for part in parts:
        for row in part:
            key = tuple([row[name] for name in names])
            into = merged.get(key)
            if into is None:
                into = merged[key] = dict(zip(by, key, strict=True))
                into.update(n=0, costed=0, cost=0)
            into["n"] += row["n"] or 0
            into["costed"] += row.get("costed") or 0
            into["cost"] += row.get("total") or 0
    return [row for row in merged.values() if row["n"]]


def _grouped(executions: Any, by: tuple[str, ...]) -> Any:
    return (
        executions.annotate(**{f"k_{k}": _EXECUTION_KEYS[k] for k in by})
        .values(*[f"k_{k}" for k in by])
        .annotate(n=Count("id"), costed=Count("id", filter=Q(cost__gt=0)), total=Sum("cost"))
        .order_by()
    )


def _whole(since: datetime) -> datetime:
    """Where a window's whole rollup rows start: past HOURLY_WINDOW old hours may be folded
    into days, so whole days then; the executions before it are counted live."""
    recent = since >= timezone.now() - rollups.HOURLY_WINDOW
    return _next_hour(since) if recent else _next_day(since)


def _next_day(moment: datetime) -> datetime:
    floor = rollups.midnight(moment)
    return floor if floor == moment else floor + timedelta(days=1)


def _next_hour(moment: datetime) -> datetime:
    floor = moment.replace(minute=0, second=0, microsecond=0)
    return floor if floor == moment else floor + timedelta(hours=1)


def execution_stats(*, workspace: Workspace, since: datetime | None = None) -> dict[str, Any]:
    return _stats(_counts(workspace=workspace, since=since, by=("status",)))


def _stats(rows: list[dict]) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + row["n"]
    return {
        "by_status": {status: counts.get(status, 0) for status in ALL_STATUSES},
        "total": sum(counts.values()),
        "cost": sum((Decimal(row["cost"]) for row in rows), Decimal("0")),
    }


def execution_hourly(*, workspace: Workspace, since: datetime) -> list[dict[str, Any]]:
    """Executions created per hour since `since`, by status: rows of hour, status, n."""
    return _hourly(_counts(workspace=workspace, since=since, by=("hour", "status")))


def _hourly(rows: list[dict]) -> list[dict[str, Any]]:
    return [{"hour": row["hour"], "status": row["status"], "n": row["n"]} for row in rows]


def execution_stats_hourly(
    *, workspace: Workspace, since: datetime
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """execution_stats and execution_hourly over the same window, from one read (the overview
    shows both for the last 24 h: three queries instead of six)."""
    rows = _counts(workspace=workspace, since=since, by=("hour", "status"))
    return _stats(rows), _hourly(rows)


def execution_daily_cost(*, workspace: Workspace, since: datetime) -> list[dict[str, Any]]:
    """Cost per day per agent since `since` (runs with a cost above zero)."""
    return _daily_cost(_counts(workspace=workspace, since=since, by=("day", "agent_name")))


def _daily_cost(rows: list[dict]) -> list[dict[str, Any]]:
    return [
        {"day": r["day"], "agent__name": r["agent_name"], "cost": r["cost"], "n": r["costed"]}
        for r in rows
        if r["costed"]
    ]


def overview_counts(*, workspace: Workspace, day_since: datetime, week_since: datetime) -> dict:
    """The overview's numbers in four queries instead of eight: execution_stats() of all time
    without its cost, which the overview does not show (`stats`: by_status and total), and
    since `day_since` (`day`), execution_hourly() since `day_since` (`hourly`) and
    execution_daily_cost() since `week_since` (`daily_cost`). Two rollup queries (by status
    and the day's hours; by day and agent over the week), a count of the unfinished runs per
    status (the (workspace, status, id) index alone), and one read of the executions table for
    what no rollup holds within the windows: the unfinished runs created in them, and the
    ended runs of each one's partial first hour (or day)."""
    day_whole, week_whole = _whole(day_since), _whole(week_since)
    rollup = ExecutionRollup.objects.filter(workspace=workspace)
    sums = {"n": Sum("count"), "costed": Sum("costed"), "total": Sum("cost")}
    # All time by status and the day's whole hours by hour and status in one read of the
    # workspace's rollup rows (all of them are read for all time anyway): grouped by the hour
    # only within the day, so all time adds one group per status (rows with no hour).
    in_day_hours = Case(When(hour__gte=day_whole, then=F("hour")), output_field=DateTimeField())
    by_status_hour = list(
        rollup.values(k_hour=in_day_hours, k_status=F("status")).annotate(**sums).order_by()
    )
    by_hour = [row for row in by_status_hour if row["k_hour"] is not None]
    by_day = list(
        rollup.filter(hour__gte=week_whole)
        .values(k_day=TruncDate("hour"), k_agent_name=F("agent__name"))
        .annotate(**sums)
        .order_by()
    )
    # Unfinished runs count in every window they were created in; an ended run is read here
    # only in a window's partial first hour (or day), which its rollup rows leave out.
    ended_edge = Q(status__in=TERMINAL) & (
        Q(created_at__gte=day_since, created_at__lt=day_whole)
        | Q(created_at__gte=week_since, created_at__lt=week_whole)
    )
    active = Q(status__in=ACTIVE)
    in_day = Q(created_at__gte=day_since) & (active | Q(created_at__lt=day_whole))
    in_week = Q(created_at__gte=week_since) & (active | Q(created_at__lt=week_whole))
    # The unfinished runs of all time are only counted (index-only); their rows are read only
    # when created in a window: found on the same index by id, as a UUIDv7 id starts with its
    # creation time (an hour early, so a run whose id was made before its row still is).
    earliest = min(day_since, week_since)
    floor = uuid.UUID(int=int((earliest - timedelta(hours=1)).timestamp() * 1000) << 80)
    active_counts = list(
        Execution.objects.for_workspace(workspace)
        .filter(active)
        .values(k_status=F("status"))
        .annotate(n=Count("id"))
        .order_by()
    )
    moment = DateTimeField()
    live = list(
        Execution.objects.for_workspace(workspace)
        .filter((active & Q(pk__gte=floor, created_at__gte=earliest)) | ended_edge)
        .values(
            k_status=F("status"),
            # Grouped by hour (day, agent) only within the windows: unfinished runs of any
            # age otherwise make one group each.
            k_hour=TruncHour(Case(When(in_day, then=F("created_at")), output_field=moment)),
            k_day=TruncDate(Case(When(in_week, then=F("created_at")), output_field=moment)),
            k_agent_name=Case(When(in_week, then=F("agent__name"))),
            in_day=ExpressionWrapper(in_day, output_field=BooleanField()),
            in_week=ExpressionWrapper(in_week, output_field=BooleanField()),
        )
        .annotate(n=Count("id"), costed=Count("id", filter=Q(cost__gt=0)), total=Sum("cost"))
        .order_by()
    )
    day_rows = [row for row in live if row["in_day"]]
    hourly = _merge([by_hour, day_rows], ("hour", "status"))
    everything = _stats(_merge([by_status_hour, active_counts], ("status",)))
    return {
        "stats": {"by_status": everything["by_status"], "total": everything["total"]},
        "day": _stats(hourly),
        "hourly": _hourly(hourly),
        "daily_cost": _daily_cost(
            _merge([by_day, [row for row in live if row["in_week"]]], ("day", "agent_name"))
        ),
    }


def execution_duration_percentiles(
    *, workspace: Workspace, since: datetime
) -> list[dict[str, Any]]:
    """p50 / p95 duration per agent (by name) over the finished executions created on the UTC
    days from `since`'s date on, from the duration histograms the lifecycle keeps
    (DurationRollup), whatever the history: one query sums each agent's buckets over the days
    and returns only the buckets holding the two percentiles, which are interpolated within
    them — each within 1/8 of the exact percentile (rollups.duration_bucket). `count` is every
    such run with a duration. Each row's `agent` carries its id and name, what the overview
    shows; deleted agents are left out."""
    field = DurationRollup._meta.get_field
    params = [
        field("workspace").get_db_prep_value(workspace.pk, connection),
        field("day").get_db_prep_value(rollups.utc_day(since), connection),
    ]
    with connection.cursor() as cursor:
        cursor.execute(_PERCENTILE_BUCKETS, params)
        rows = cursor.fetchall()
    agents: dict[Any, dict[str, Any]] = {}
    for agent_id, name, bucket, n, upto, total in rows:
        total = int(total)  # PostgreSQL's SUM of a bigint is a numeric (a Decimal here)
        entry = agents.setdefault(
            agent_id,
            {"agent": Agent(pk=field("agent").to_python(agent_id), name=name, workspace=workspace),
             "count": total, "p50": None, "p95": None},
        )  # fmt: skip
        before = int(upto) - int(n)
        for key, percent in (("p50", 50), ("p95", 95)):
            rank = rollups.percentile_rank(total, percent)
            if before < rank <= before + int(n):
                entry[key] = rollups.within_bucket(bucket, int(n), rank - before)
    return sorted(agents.values(), key=lambda row: (row["agent"].name, str(row["agent"].pk)))


# Each agent's buckets summed over the days, the running count up to each bucket, and only the
# buckets where the p50 and p95 ranks (ceil(q x total), in integers) fall. Summed per (agent,
# bucket) before the join to the agents (names, the deleted left out): grouping by the name, a
# collated sort of every row, made it three times slower. Window functions: SQLite 3.25+.
_PERCENTILE_BUCKETS = """
WITH h AS (
  SELECT agent_id, bucket, CAST(SUM(count) AS BIGINT) AS n FROM executions_durationrollup
  WHERE workspace_id = %s AND day >= %s
  GROUP BY agent_id, bucket HAVING SUM(count) > 0
), c AS (
  SELECT agent_id, bucket, n,
         SUM(n) OVER (PARTITION BY agent_id ORDER BY bucket ROWS UNBOUNDED PRECEDING) AS upto,
         SUM(n) OVER (PARTITION BY agent_id) AS total
  FROM h
)
SELECT c.agent_id, a.name, c.bucket, c.n, c.upto, c.total
FROM c JOIN executions_agent a ON a.id = c.agent_id
WHERE a.deleted_at IS NULL AND (
  (2 * c.upto >= c.total AND 2 * (c.upto - c.n) < c.total)
  OR (100 * c.upto >= 95 * c.total AND 100 * (c.upto - c.n) < 95 * c.total)
)
"""


def agent_run_stats(*, workspace: Workspace, since: datetime) -> dict[Any, dict[str, Any]]:
    """Per agent id: runs since `since`, failures and human rejections among them (apart: a
    rejection is a decision, not a failure), and the last run's time (one index lookup per
    agent, newest first on (workspace, agent, id))."""
    stats: dict[Any, dict[str, Any]] = {}
    for row in _counts(workspace=workspace, since=since, by=("agent_id", "status")):
        entry = stats.setdefault(row["agent_id"], {"runs": 0, "failed": 0, "rejected": 0})
        entry["runs"] += row["n"]
        if row["status"] in ("failed", "rejected"):
            entry[row["status"]] += row["n"]
    newest = Execution.objects.filter(workspace=workspace, agent=OuterRef("pk")).order_by("-id")
    last = Agent.objects.filter(workspace=workspace).annotate(
        last=Subquery(newest.values("created_at")[:1])
    )
    for agent_id, moment in last.values_list("pk", "last"):
        if moment is not None:
            stats.setdefault(agent_id, {"runs": 0, "failed": 0, "rejected": 0})["last"] = moment
    return stats
