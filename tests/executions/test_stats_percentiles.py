"""Per-agent duration percentiles (the overview's table): the same figures from the SQL path
(PostgreSQL) and the Python one (SQLite)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from executions import selectors
from executions.models import Execution

pytestmark = pytest.mark.django_db


def run_at(agent, moment, duration_ms, *, status="completed"):
    """An execution whose id carries `moment` as its creation time, as a UUIDv7 does."""
    ms = int(moment.timestamp() * 1000)
    pk = uuid.UUID(int=(ms << 80) | (0x7 << 76) | uuid.uuid4().int & ((1 << 62) - 1))
    return Execution.objects.create(
        id=pk,
        workspace=agent.workspace,
        agent=agent,
        status=status,
        duration_ms=duration_ms,
        created_at=moment,
    )


def test_p50_and_p95_over_the_runs_since_per_agent(agent):
    now = timezone.now()
    for i in range(1, 21):  # 100 ms … 2,000 ms, one a minute
        run_at(agent, now - timedelta(minutes=30 - i), i * 100)
    run_at(agent, now - timedelta(days=8), 99_000)  # before the window
    run_at(agent, now - timedelta(minutes=1), None, status="running")  # not finished
    rows = selectors.execution_duration_percentiles(
        workspace=agent.workspace, since=now - timedelta(days=7)
    )
    assert [(r["agent"].pk, r["count"], r["p50"], r["p95"]) for r in rows] == [
        (agent.pk, 20, 1000, 1900)
    ]


def test_the_sample_is_each_agents_latest_runs(agent):
    now = timezone.now()
    for i in range(1, 21):
        run_at(agent, now - timedelta(minutes=30 - i), i * 100)
    rows = selectors.execution_duration_percentiles(
        workspace=agent.workspace, since=now - timedelta(days=7), sample=4
    )
    # the latest four: 1,700 … 2,000 ms
    assert [(r["count"], r["p50"], r["p95"]) for r in rows] == [(4, 1800, 2000)]


def test_an_agent_without_finished_runs_is_left_out(agent):
    rows = selectors.execution_duration_percentiles(
        workspace=agent.workspace, since=timezone.now() - timedelta(days=7)
    )
    assert rows == []
