"""Aggregates for the overview and the stats endpoint."""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Count, Sum
from django.db.models.functions import TruncDate, TruncHour

from executions.lifecycle import ALL_STATUSES
from executions.models import Agent, Execution, Workspace


def execution_stats(*, workspace: Workspace, since: datetime | None = None) -> dict[str, Any]:
    qs = Execution.objects.for_workspace(workspace)
    if since:
        qs = qs.filter(created_at__gte=since)
    counts = dict(qs.values_list("status").annotate(n=Count("id")).order_by())
    totals = qs.aggregate(cost=Sum("cost"))
    return {
        "by_status": {status: counts.get(status, 0) for status in ALL_STATUSES},
        "total": sum(counts.values()),
        "cost": totals["cost"] or Decimal("0"),
    }


def execution_hourly(*, workspace: Workspace, since: datetime) -> list[dict[str, Any]]:
    """Executions created per hour since `since`, split into finished well / badly / other."""
    rows = (
        Execution.objects.for_workspace(workspace)
        .filter(created_at__gte=since)
        .annotate(hour=TruncHour("created_at"))
        .values("hour", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    return list(rows)


def execution_daily_cost(*, workspace: Workspace, since: datetime) -> list[dict[str, Any]]:
    """Cost per day per agent since `since`."""
    rows = (
        Execution.objects.for_workspace(workspace)
        .filter(created_at__gte=since, cost__gt=0)
        .annotate(day=TruncDate("created_at"))
        .values("day", "agent__name")
        .annotate(cost=Sum("cost"), n=Count("id"))
        .order_by()
    )
    return list(rows)


def execution_duration_percentiles(
    *, workspace: Workspace, since: datetime, sample: int = 2000
) -> list[dict[str, Any]]:
    """p50 / p95 duration per agent over finished executions since `since` (the latest
    `sample` runs of each agent, so the overview stays fast on millions of rows)."""
    agents = Agent.objects.for_workspace(workspace).order_by("name")
    result = []
    for agent in agents:
        values = list(
            Execution.objects.filter(
                workspace=workspace,
                agent=agent,
                created_at__gte=since,
                duration_ms__isnull=False,
            )
            .order_by("-created_at")
            .values_list("duration_ms", flat=True)[:sample]
        )
        if not values:
            continue
        values.sort()
        result.append(
            {
                "agent": agent,
                "count": len(values),
                "p50": _percentile(values, 0.50),
                "p95": _percentile(values, 0.95),
            }
        )
    return result


def _percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    index = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[index]
