"""The overview's approvals card: how many wait, and the oldest one's title, link and agent,
read without the assignees and decisions the inbox prefetches (issue 12)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from approvals.models import Approval
from executions.models import Execution
from tests.executions.dashboard_helpers import browser, park, start

pytestmark = pytest.mark.django_db


def test_overview_names_the_oldest_pending_approval_and_its_agent(viewer, agent):
    older = park(start(agent))
    newer = park(start(agent))
    Approval.objects.filter(pk=older.pk).update(
        title="Refund the oldest", created_at=timezone.now() - timedelta(hours=2)
    )
    Approval.objects.filter(pk=newer.pk).update(title="Refund the newest")
    page = browser(viewer)
    with CaptureQueriesContext(connection) as captured:
        html = page.get("/").content.decode()
    assert "Waiting for a decision" in html
    assert f'href="/approvals/{older.pk}/">Refund the oldest</a> · {agent.name}' in html
    assert "Refund the newest" not in html
    tables = " ".join(q["sql"] for q in captured.captured_queries)
    assert "approvals_approval_assignee_users" not in tables
    assert "approvals_approvaldecision" not in tables


def test_overview_24h_cards_and_chart_count_the_same_window(viewer, agent):
    """The 24 h counts and the hourly chart come from one read of the window; a run older than
    a day is in neither, and both say the same."""
    start(agent)
    start(agent)
    old = start(agent)
    Execution.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    html = browser(viewer).get("/").content.decode()
    assert "2 in the last 24 h · 3 active" in html
    assert "3 in the last 24 h" not in html


@pytest.mark.parametrize("path", ["/", "/approvals/?tab=all"])
def test_header_badge_reuses_the_pages_pending_count(viewer, agent, path):
    """The overview and the inbox count the workspace's pending approvals anyway: the header
    badge shows that number rather than counting them a second time."""
    park(start(agent))
    park(start(agent))
    page = browser(viewer)
    with CaptureQueriesContext(connection) as captured:
        html = page.get(path).content.decode()
    assert 'id="nav-approvals-count" class="count-pill" data-count="2"' in html
    counts = [
        q["sql"]
        for q in captured.captured_queries
        if "approvals_approval" in q["sql"] and "COUNT(" in q["sql"].upper()
    ]
    assert len(counts) == 1, counts
