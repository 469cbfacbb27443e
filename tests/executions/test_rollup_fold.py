"""Rollups of old days folded into one row per day (retention does it): the stats read the
same before and after, for every window, and runs ending late in a folded day still count."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import Count, Sum
from django.utils import timezone

from executions import lifecycle, rollups, selectors, services
from executions.engine import retention
from executions.lifecycle import ALL_STATUSES
from executions.models import Execution, ExecutionRollup

pytestmark = pytest.mark.django_db


def ended_at(agent, created, status="completed", cost="0.10"):
    """A run created at `created` that ended now, through the lifecycle."""
    execution, _ = services.execution_start(workspace=agent.workspace, agent=agent, input={"n": 1})
    Execution.objects.filter(pk=execution.pk).update(created_at=created)
    execution.refresh_from_db()
    if status != "cancelled":
        lifecycle.transition(execution, "running", type="start")
    fields = {"cost": Decimal(cost), "duration_ms": 1500}
    lifecycle.transition(execution, status, type="finish", fields=fields)
    return execution


def raw(workspace, since=None):
    rows = Execution.objects.filter(workspace=workspace)
    if since is not None:
        rows = rows.filter(created_at__gte=since)
    counts = dict(rows.values_list("status").annotate(n=Count("id")).order_by())
    return (
        {status: counts.get(status, 0) for status in ALL_STATUSES},
        Decimal(rows.aggregate(cost=Sum("cost"))["cost"] or 0),
    )


def stats(workspace, since=None):
    got = selectors.execution_stats(workspace=workspace, since=since)
    return got["by_status"], Decimal(got["cost"])


@pytest.fixture
def history(agent):
    now = timezone.now()
    for days in (10, 9, 5):
        for hour in (1, 7, 13, 22):
            created = rollups.midnight(now - timedelta(days=days)) + timedelta(hours=hour)
            for status in ("completed", "failed", "cancelled"):
                ended_at(agent, created, status)
    ended_at(agent, now - timedelta(hours=3))
    ended_at(agent, now - timedelta(minutes=10), "failed")
    return now


def windows(now):
    return [
        None,
        now - timedelta(days=9, hours=5),  # mid-day inside the folded range
        rollups.midnight(now) - timedelta(days=6),  # the overview's cost chart
        now - timedelta(days=1),
        now - timedelta(hours=3, minutes=30),
    ]


def test_folding_keeps_every_windows_stats_and_leaves_one_row_per_day(agent, history):
    workspace = agent.workspace
    before = ExecutionRollup.objects.count()
    folded = rollups.rollup_fold()
    assert folded > 0
    old = ExecutionRollup.objects.filter(hour__lt=rollups.midnight(history - rollups.FOLD_AFTER))
    assert {(r.hour.hour, r.shard) for r in old} == {(0, 0)}
    keys = list(old.values_list("hour", "agent_id", "status"))
    assert len(keys) == len(set(keys)) == 3 * 3  # (day, agent, status) once each
    assert ExecutionRollup.objects.count() < before
    for since in windows(history):
        assert stats(workspace, since) == raw(workspace, since), since
    assert rollups.rollup_fold() == 0  # nothing left to fold


def test_a_run_ending_late_in_a_folded_day_still_counts(agent, history):
    rollups.rollup_fold()
    ended_at(agent, history - timedelta(days=10), "failed", cost="2.50")
    for since in windows(history):
        assert stats(agent.workspace, since) == raw(agent.workspace, since), since
    rollups.rollup_fold()  # and folds into its day next time
    for since in windows(history):
        assert stats(agent.workspace, since) == raw(agent.workspace, since), since


def test_retention_folds_after_purging(agent, history):
    counts = retention.purge(now=history)
    assert counts["rollups_folded"] > 0
    for since in windows(history):
        assert stats(agent.workspace, since) == raw(agent.workspace, since), since
