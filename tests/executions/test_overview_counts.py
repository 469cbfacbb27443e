"""overview_counts (the overview's four reads) equals the three selectors it replaces, for the
overview's windows and for windows reaching into folded days (issue 12)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from executions import lifecycle, rollups, selectors, services
from executions.models import Execution
from tests.conftest import WORKFLOW_CONFIG

pytestmark = pytest.mark.django_db


def run_at(agent, created, status="completed", cost="0.10"):
    """A run created at `created`, left pending or running, or ended now through the lifecycle."""
    execution, _ = services.execution_start(workspace=agent.workspace, agent=agent, input={"n": 1})
    Execution.objects.filter(pk=execution.pk).update(created_at=created)
    execution.refresh_from_db()
    if status == "pending":
        return
    if status != "cancelled":
        lifecycle.transition(execution, "running", type="start")
    if status != "running":
        lifecycle.transition(
            execution, status, type="finish", fields={"cost": Decimal(cost), "duration_ms": 9}
        )


def old_way(workspace, day_since, week_since):
    day, hourly = selectors.execution_stats_hourly(workspace=workspace, since=day_since)
    return {
        "stats": selectors.execution_stats(workspace=workspace),
        "day": day,
        "hourly": hourly,
        "daily_cost": selectors.execution_daily_cost(workspace=workspace, since=week_since),
    }


def normalised(counts):
    def rows(items):
        return sorted(
            sorted((k, Decimal(v) if k == "cost" else str(v)) for k, v in row.items())
            for row in items
        )

    return {
        # All time without its cost: the overview does not show it, so overview_counts does
        # not read it.
        "stats": {"by_status": counts["stats"]["by_status"], "total": counts["stats"]["total"]},
        "day": {**counts["day"], "cost": Decimal(counts["day"]["cost"])},
        "hourly": rows(counts["hourly"]),
        "daily_cost": rows(counts["daily_cost"]),
    }


@pytest.mark.parametrize("fold", [False, True])
def test_overview_counts_equal_the_selectors_they_replace(agent, fold):
    other = services.agent_create(workspace=agent.workspace, name="second", type="workflow")
    services.agent_version_create(agent=other, version="1.0", config=WORKFLOW_CONFIG)
    now = timezone.now()
    day_since = now - timedelta(hours=24)
    week_since = rollups.midnight(now) - timedelta(days=6)
    moments = [
        now - timedelta(days=9),  # before every window
        week_since - timedelta(minutes=1),
        week_since + timedelta(hours=5),
        now - timedelta(days=3, hours=2),
        day_since - timedelta(minutes=20),  # the hour the 24 h window starts in, before it
        day_since + timedelta(minutes=1),  # ... and in it (counted live: a partial hour)
        now - timedelta(hours=5),
        now - timedelta(minutes=3),
    ]
    statuses = ["completed", "failed", "cancelled", "pending", "running"]
    for i, moment in enumerate(moments):
        for j, status in enumerate(statuses):
            run_at(agent if (i + j) % 2 else other, moment, status, cost=f"0.{i}{j}5")
    if fold:
        rollups.rollup_fold()
    for windows in [
        (day_since, week_since),
        (now - timedelta(hours=3, minutes=30), now - timedelta(days=9, hours=5)),
        (day_since, now - timedelta(days=1)),
    ]:
        got = selectors.overview_counts(
            workspace=agent.workspace, day_since=windows[0], week_since=windows[1]
        )
        assert normalised(got) == normalised(old_way(agent.workspace, *windows)), windows
    got = selectors.overview_counts(
        workspace=agent.workspace, day_since=day_since, week_since=week_since
    )
    assert got["stats"]["total"] == len(moments) * len(statuses)
    assert got["day"]["total"] == 3 * len(statuses)


def test_unfinished_runs_with_time_ordered_ids_count_in_their_windows_only(agent):
    """The windows find their unfinished runs by id (a UUIDv7 starts with its creation time):
    runs whose ids carry their real creation times, as the app's do, land in the same windows as
    the selectors put them."""
    now = timezone.now()
    day_since = now - timedelta(hours=24)
    week_since = rollups.midnight(now) - timedelta(days=6)
    for moment in (now - timedelta(days=30), week_since + timedelta(minutes=2), now):
        for status in ("pending", "running", "awaiting_approval"):
            ms = int(moment.timestamp() * 1000)
            pk = uuid.UUID(int=(ms << 80) | (0x7 << 76) | uuid.uuid4().int & ((1 << 62) - 1))
            Execution.objects.create(
                id=pk, workspace=agent.workspace, agent=agent, status=status, created_at=moment
            )
    got = selectors.overview_counts(
        workspace=agent.workspace, day_since=day_since, week_since=week_since
    )
    assert normalised(got) == normalised(old_way(agent.workspace, day_since, week_since))
    assert (got["stats"]["total"], got["day"]["total"]) == (9, 3)
    assert sum(row["n"] for row in got["hourly"]) == 3
