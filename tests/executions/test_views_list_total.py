"""The executions list says how many runs match: exact up to the cap, then "N+" (issue 12)."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions.selectors import pagination
from tests.executions.dashboard_helpers import browser, start

pytestmark = pytest.mark.django_db


def total(html: str) -> str | None:
    found = re.search(r'<p class="faint" id="exec-total"[^>]*>([^<]*)</p>', html)
    return found.group(1) if found else None


def test_the_first_page_shows_the_exact_total_when_it_is_small(viewer, agent):
    for _ in range(3):
        start(agent)
    html = browser(viewer).get("/executions/").content.decode()
    assert total(html) == "3 executions"
    html = browser(viewer).get("/executions/", {"status": "failed"}).content.decode()
    assert total(html) is None  # nothing matches: the empty state says so instead


def test_past_the_cap_the_total_says_at_least(viewer, agent, monkeypatch):
    monkeypatch.setattr(pagination, "COUNT_CAP", 2)
    for _ in range(3):
        start(agent)
    html = browser(viewer).get("/executions/").content.decode()
    assert total(html).startswith("2+ executions match")


def test_load_more_pages_do_not_count_again(viewer, agent):
    for _ in range(3):
        start(agent)
    page = browser(viewer)
    with CaptureQueriesContext(connection) as first:
        page.get("/executions/")
    with CaptureQueriesContext(connection) as more:
        page.get("/executions/", {"fragment": "rows"}, HTTP_HX_REQUEST="true")
    counts = [q["sql"] for q in first.captured_queries if "COUNT(" in q["sql"]]
    assert any("executions_execution" in sql for sql in counts)
    assert not any("COUNT(" in q["sql"] for q in more.captured_queries)
