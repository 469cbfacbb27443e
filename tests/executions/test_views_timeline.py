"""The execution page's timeline: the latest entries, and older ones on demand (issue 12)."""

from __future__ import annotations

import re

import pytest

from executions import lifecycle
from tests.executions.dashboard_helpers import browser, start

pytestmark = pytest.mark.django_db


@pytest.fixture
def long_run(agent):
    """An execution with 120 history entries (its init, then 119 steps)."""
    execution = start(agent)
    lifecycle.append_many(
        execution,
        [{"type": "step", "to": None, "step_path": f"main[{i}]"} for i in range(119)],
    )
    execution.refresh_from_db()
    assert execution.transition_count == 120
    return execution


def seqs(html: str) -> list[int]:
    return [int(n) for n in re.findall(r'<li id="tr-(\d+)"', html)]


def test_the_page_shows_the_latest_fifty_entries_and_a_control_for_older_ones(viewer, long_run):
    body = browser(viewer).get(f"/executions/{long_run.pk}/").content.decode()
    assert seqs(body) == list(range(71, 121))
    assert "70 earlier entries" in body
    assert f"/executions/{long_run.pk}/?before=71" in body


def test_load_older_returns_the_fifty_before_and_the_next_control(viewer, long_run):
    page = browser(viewer)
    url = f"/executions/{long_run.pk}/"
    older = page.get(url, {"before": 71}, HTTP_HX_REQUEST="true").content.decode()
    assert seqs(older) == list(range(21, 71))
    assert "20 earlier entries" in older and f"{url}?before=21" in older
    assert "<html" not in older  # a fragment for htmx, not the page

    oldest = page.get(url, {"before": 21}, HTTP_HX_REQUEST="true").content.decode()
    assert seqs(oldest) == list(range(1, 21))
    assert 'id="timeline-older"' not in oldest  # nothing before the first entry


def test_load_older_refuses_a_position_that_is_not_a_positive_number(viewer, long_run):
    page = browser(viewer)
    for before in ("abc", "0", "-3"):
        response = page.get(f"/executions/{long_run.pk}/", {"before": before})
        assert response.status_code == 400


def test_without_a_script_the_control_still_shows_the_whole_timeline(viewer, long_run):
    body = browser(viewer).get(f"/executions/{long_run.pk}/", {"all": "1"}).content.decode()
    assert seqs(body) == list(range(1, 121))
    assert 'id="timeline-older"' not in body


def test_another_workspace_cannot_page_the_timeline(outsider, long_run):
    response = browser(outsider).get(f"/executions/{long_run.pk}/", {"before": 71})
    assert response.status_code == 404
