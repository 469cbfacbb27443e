"""Per-agent duration percentiles (the overview's table), read from the duration histograms the
lifecycle keeps (DurationRollup): within the bucket of the exact percentile (1/8), on SQLite and
PostgreSQL alike, for runs ended one by one, in the engine's batches, and after retention."""

from __future__ import annotations

import importlib.util
import math
import random
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.db.models import Sum
from django.utils import timezone

from executions import lifecycle, rollups, selectors, services
from executions.models import DurationRollup, Execution
from tests.conftest import WORKFLOW_CONFIG

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def run_at(agent, moment, duration_ms, *, status="completed"):
    """A run created at `moment`, ended through the lifecycle with `duration_ms` (or left
    running when status is "running")."""
    execution, _ = services.execution_start(workspace=agent.workspace, agent=agent, input={"n": 1})
    Execution.objects.filter(pk=execution.pk).update(created_at=moment)
    execution.refresh_from_db()
    lifecycle.transition(execution, "running", type="start")
    if status != "running":
        lifecycle.transition(execution, status, type="finish", fields={"duration_ms": duration_ms})
    return execution


def exact(values, q):
    """The percentile the old selector showed (percentile_disc: rank ceil(q * n))."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def same_bucket(estimate, value):
    return rollups.duration_bucket(estimate) == rollups.duration_bucket(value)


def percentiles(workspace, since):
    rows = selectors.execution_duration_percentiles(workspace=workspace, since=since)
    return [(r["agent"].pk, r["agent"].name, r["count"], r["p50"], r["p95"]) for r in rows]


def test_p50_and_p95_over_the_windows_finished_runs_per_agent(agent):
    now = timezone.now()
    for i in range(1, 21):  # 100 ms … 2,000 ms, one a minute
        run_at(agent, now - timedelta(minutes=30 - i), i * 100)
    run_at(agent, now - timedelta(days=8), 99_000)  # before the window
    run_at(agent, now - timedelta(minutes=1), None, status="running")  # not finished
    [(agent_id, name, count, p50, p95)] = percentiles(agent.workspace, now - timedelta(days=7))
    assert (agent_id, name, count) == (agent.pk, "doubler", 20)
    assert same_bucket(p50, 1000) and same_bucket(p95, 1900), (p50, p95)


def test_short_durations_are_exact(agent):
    now = timezone.now()
    for ms in (1, 2, 3, 4, 5, 7, 9, 11, 13, 15):
        run_at(agent, now - timedelta(minutes=5), ms)
    [(_, _, count, p50, p95)] = percentiles(agent.workspace, now - timedelta(days=7))
    assert (count, p50, p95) == (10, 5, 15)


def test_histogram_percentiles_match_the_exact_ones_within_a_bucket(agent):
    """Durations from 0 ms to a day (log-uniform), ended through the lifecycle: p50 and p95 fall
    in the exact percentile's bucket; on PostgreSQL the exact one is percentile_disc over the
    executions, as the overview read it before."""
    rng = random.Random(12)
    now = timezone.now()
    other = services.agent_create(workspace=agent.workspace, name="another", type="workflow")
    services.agent_version_create(agent=other, version="1.0", config=WORKFLOW_CONFIG)
    durations = {agent.pk: [], other.pk: []}
    for owner in (agent, other):
        for _ in range(60):
            ms = int(math.exp(rng.uniform(0, math.log(86_400_000))))
            run_at(owner, now - timedelta(hours=rng.uniform(0, 100)), ms)
            durations[owner.pk].append(ms)
    rows = percentiles(agent.workspace, now - timedelta(days=7))
    assert [r[1] for r in rows] == ["another", "doubler"]  # by name
    for agent_id, _, count, p50, p95 in rows:
        values = durations[agent_id]
        assert count == len(values)
        assert same_bucket(p50, exact(values, 0.5)), (p50, exact(values, 0.5))
        assert same_bucket(p95, exact(values, 0.95)), (p95, exact(values, 0.95))
        assert abs(p50 - exact(values, 0.5)) <= exact(values, 0.5) / 8
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT percentile_disc(0.5) WITHIN GROUP (ORDER BY duration_ms),"
                    " percentile_disc(0.95) WITHIN GROUP (ORDER BY duration_ms)"
                    " FROM executions_execution WHERE agent_id = %s AND status = 'completed'",
                    [agent_id],
                )
                disc50, disc95 = cursor.fetchone()
            assert same_bucket(p50, disc50) and same_bucket(p95, disc95)


def test_the_pure_percentile_is_in_the_exact_ones_bucket():
    rng = random.Random(7)
    for _ in range(300):
        values = [int(rng.expovariate(1 / rng.choice((50, 900, 40_000)))) for _ in range(97)]
        counts: dict[int, int] = {}
        for ms in values:
            counts[rollups.duration_bucket(ms)] = counts.get(rollups.duration_bucket(ms), 0) + 1
        buckets = sorted(counts.items())
        for q in (0.5, 0.95, 0.99):
            estimate = rollups.histogram_percentile(buckets, len(values), q)
            assert same_bucket(estimate, exact(values, q)), (q, estimate, exact(values, q))


def test_bucket_bounds_invert_the_bucket():
    for ms in [*range(2000), *(random.Random(3).randrange(10**12) for _ in range(5000))]:
        lo, hi = rollups.bucket_bounds(rollups.duration_bucket(ms))
        assert lo <= ms < hi and (hi - lo) * 8 <= max(lo, 8)


def test_a_batch_counts_durations_as_single_endings_do(agent):
    """count_ended_many (the engine's group commit) adds the same histogram as count_ended."""
    now = timezone.now()
    one_by_one = [run_at(agent, now - timedelta(minutes=3), ms) for ms in (40, 40, 700, 9000)]
    single = sorted(
        DurationRollup.objects.values_list("day", "bucket").annotate(n=Sum("count")).order_by()
    )
    assert single
    DurationRollup.objects.all().delete()
    rollups.count_ended_many(
        [(e, "completed", e.created_at, {"duration_ms": e.duration_ms}) for e in one_by_one]
    )
    assert (
        sorted(
            DurationRollup.objects.values_list("day", "bucket").annotate(n=Sum("count")).order_by()
        )
        == single
    )


def test_retention_takes_purged_runs_out_of_the_histogram(agent):
    now = timezone.now()
    kept = [run_at(agent, now - timedelta(hours=2), ms) for ms in (100, 200, 300)]
    purged = [run_at(agent, now - timedelta(hours=2), ms) for ms in (5000, 6000)]
    rollups.rollup_forget([e.pk for e in purged])
    Execution.objects.filter(pk__in=[e.pk for e in purged]).delete()
    [(_, _, count, p50, p95)] = percentiles(agent.workspace, now - timedelta(days=7))
    assert count == len(kept)
    assert same_bucket(p50, 200) and same_bucket(p95, 300)


def test_deleted_agents_and_agents_without_finished_runs_are_left_out(agent):
    now = timezone.now()
    assert percentiles(agent.workspace, now - timedelta(days=7)) == []
    run_at(agent, now - timedelta(minutes=3), 100)
    assert len(percentiles(agent.workspace, now - timedelta(days=7))) == 1
    agent.deleted_at = now
    agent.save(update_fields=["deleted_at"])
    assert percentiles(agent.workspace, now - timedelta(days=7)) == []


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the bench builds its data in PostgreSQL"
)
def test_the_bench_builders_sql_makes_the_lifecycles_histogram(agent):
    """bench/scale_sql.py's DURATIONS (how the scale dataset gets its histograms) computes the
    rows the lifecycle writes, so the bench measures the real read."""
    spec = importlib.util.spec_from_file_location("scale_sql", ROOT / "bench" / "scale_sql.py")
    scale_sql = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(scale_sql)
    rng = random.Random(5)
    now = timezone.now()
    for ms in [0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 1023, 1024, 2**31 - 1, 2**31]:
        run_at(agent, now - timedelta(days=rng.uniform(0, 3)), ms)
    for _ in range(40):
        run_at(agent, now - timedelta(days=rng.uniform(0, 3)), rng.randrange(10**9))

    def histogram():  # summed over shards (the lifecycle spreads rows, the builder does not)
        keys = ("workspace_id", "day", "agent_id", "bucket")
        return sorted(DurationRollup.objects.values_list(*keys).annotate(n=Sum("count")))

    written = histogram()
    DurationRollup.objects.all().delete()
    with connection.cursor() as cursor:
        cursor.execute(scale_sql.DURATIONS)
    assert histogram() == written
