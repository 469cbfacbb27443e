"""Aggregates for the overview, the agents page and the stats endpoint.

Ended executions are read from ExecutionRollup (counts and sums per workspace, agent, status and
hour, maintained by the lifecycle as each run ends); unfinished runs are few, and are counted
from the executions table through its status index, as are the ended runs of the partial hour
at the start of a `since` window. So a chart over a million runs reads a few hundred rows.
"""

from __future__ import annotations

import math
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
    Window,
)
from django.db.models.functions import RowNumber, TruncDate, TruncHour
from django.utils import timezone

from executions import rollups
from executions.lifecycle import ACTIVE, ALL_STATUSES, TERMINAL
from executions.models import Agent, Execution, ExecutionRollup, Workspace

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
    merged: dict[tuple, dict[str, Any]] = {}
    for part in parts:
        for row in part:
            key = tuple(row[f"k_{k}"] for k in by)
            empty = {**dict(zip(by, key, strict=True)), "n": 0, "costed": 0, "cost": 0}
            into = merged.setdefault(key, empty)
            into["n"] += row["n"] or 0
            into["costed"] += row["costed"] or 0
            into["cost"] += row["total"] or 0
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
    (`stats`) and since `day_since` (`day`), execution_hourly() since `day_since` (`hourly`)
    and execution_daily_cost() since `week_since` (`daily_cost`). One rollup query per
    grouping, and one read of the executions table for what no rollup holds: the unfinished
    runs, and the ended runs of each window's partial first hour (or day)."""
    day_whole, week_whole = _whole(day_since), _whole(week_since)
    rollup = ExecutionRollup.objects.filter(workspace=workspace)
    sums = {"n": Sum("count"), "costed": Sum("costed"), "total": Sum("cost")}
    by_status = list(rollup.values(k_status=F("status")).annotate(**sums).order_by())
    by_hour = list(
        rollup.filter(hour__gte=day_whole)
        .values(k_hour=F("hour"), k_status=F("status"))
        .annotate(**sums)
        .order_by()
    )
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
    moment = DateTimeField()
    live = list(
        Execution.objects.for_workspace(workspace)
        .filter(active | ended_edge)
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
    active_rows = [row for row in live if row["k_status"] in ACTIVE]
    day_rows = [row for row in live if row["in_day"]]
    hourly = _merge([by_hour, day_rows], ("hour", "status"))
    return {
        "stats": _stats(_merge([by_status, active_rows], ("status",))),
        "day": _stats(hourly),
        "hourly": _hourly(hourly),
        "daily_cost": _daily_cost(
            _merge([by_day, [row for row in live if row["in_week"]]], ("day", "agent_name"))
        ),
    }


def execution_duration_percentiles(
    *, workspace: Workspace, since: datetime, sample: int = 2000
) -> list[dict[str, Any]]:
    """p50 / p95 duration per agent over finished executions created since `since` (the latest
    `sample` runs of each agent), in one query. "Since" is read from the id (a UUIDv7 starts
    with its creation time), so on PostgreSQL each agent's sample is an index-only range of
    (workspace, agent, id) INCLUDE (duration_ms), and the percentiles and the agents' names
    are read there (each row's `agent` then carries its id and name, what the overview shows);
    elsewhere the agents are read first and their samples ranked in Python."""
    floor = uuid.UUID(int=int(since.timestamp() * 1000) << 80)
    if connection.vendor == "postgresql":
        return _percentiles_in_sql(workspace, floor, sample)
    agents = {a.pk: a for a in Agent.objects.for_workspace(workspace).order_by("name")}
    measured = _percentiles_in_python(workspace, list(agents), floor, sample)
    return [
        {"agent": agent, "count": measured[agent_id][0], "p50": measured[agent_id][1],
         "p95": measured[agent_id][2]}
        for agent_id, agent in agents.items()
        if agent_id in measured
    ]  # fmt: skip


_PERCENTILES = """
SELECT a.id, a.name, count(*), percentile_disc(0.5) WITHIN GROUP (ORDER BY s.d),
       percentile_disc(0.95) WITHIN GROUP (ORDER BY s.d)
FROM executions_agent a CROSS JOIN LATERAL (
  SELECT e.duration_ms AS d FROM executions_execution e
  WHERE e.workspace_id = a.workspace_id AND e.agent_id = a.id AND e.id >= %s
    AND e.duration_ms IS NOT NULL
  ORDER BY e.id DESC LIMIT %s
) s
WHERE a.workspace_id = %s AND a.deleted_at IS NULL
GROUP BY a.id, a.name
ORDER BY a.name
"""


def _percentiles_in_sql(workspace: Workspace, floor: uuid.UUID, sample: int) -> list[dict]:
    # percentile_disc(q) is the first value whose cumulative share reaches q: the same
    # value _percentile() picks. The agents' rows come with it (Agent.objects.for_workspace,
    # by name): one query, not two.
    with connection.cursor() as cursor:
        cursor.execute(_PERCENTILES, [floor, sample, workspace.pk])
        return [
            {"agent": Agent(pk=agent_id, name=name, workspace=workspace), "count": count,
             "p50": p50, "p95": p95}
            for agent_id, name, count, p50, p95 in cursor.fetchall()
        ]  # fmt: skip


def _percentiles_in_python(workspace: Workspace, agent_ids: list, floor: Any, sample: int) -> dict:
    latest = (
        Execution.objects.for_workspace(workspace)
        .filter(pk__gte=floor, duration_ms__isnull=False, agent_id__in=agent_ids)
        .annotate(rank=Window(RowNumber(), partition_by=[F("agent_id")], order_by=F("id").desc()))
        .filter(rank__lte=sample)
        .values_list("agent_id", "duration_ms")
    )
    values: dict[Any, list[int]] = {}
    for agent_id, duration in latest:
        values.setdefault(agent_id, []).append(duration)
    measured = {}
    for agent_id, durations in values.items():
        durations.sort()
        measured[agent_id] = (
            len(durations),
            _percentile(durations, 0.50),
            _percentile(durations, 0.95),
        )
    return measured


def _percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    index = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[index]


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
