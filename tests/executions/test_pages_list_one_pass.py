"""A metadata-filtered dashboard list's first page and its count from one read of the matches
(execution_first_page_counted, PostgreSQL): the same page, total and "Load more" as the page
read and counted apart, in every order; the next page continues it."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions import lifecycle, selectors
from executions.models import Execution
from tests.executions.dashboard_helpers import browser, start

pytestmark = pytest.mark.django_db

ORDERINGS = ["", "cost", "-cost", "-duration_ms", "started_at", "-updated_at"]


def _runs(agent):
    for i in range(70):  # 61 of tenant a, 9 of b
        run = start(agent, metadata={"tenant": "a" if i % 8 else "b"})
        if i % 3:
            lifecycle.transition(run, "running", type="start", step_path="main[0]")
        if i % 3 == 2:
            lifecycle.transition(run, "completed", type="finish", fields={"duration_ms": i * 7})
            Execution.objects.filter(pk=run.pk).update(cost=Decimal(i % 5) / 100)


def _shown(body: str) -> tuple[list[str], str, str]:
    ids = re.findall(r'<tr id="exec-([0-9a-f-]+)"', body)
    total = re.search(r'id="exec-total"[^>]*>([^<]*)', body)
    more = re.search(r'class="load-more".*?href="([^"]+)"', body)
    return ids, total.group(1) if total else "", more.group(1) if more else ""


@pytest.mark.parametrize("ordering", ORDERINGS)
def test_one_read_gives_the_same_page_total_and_next(viewer, agent, ordering, monkeypatch):
    _runs(agent)
    page = browser(viewer)
    path = f"/executions/?metadata=tenant%3Da&ordering={ordering}"
    with CaptureQueriesContext(connection) as captured:
        body = page.get(path).content.decode()
    ids, total, more = _shown(body)
    assert len(ids) == 50 and total.startswith("61 executions") and more
    if connection.vendor == "postgresql":
        sql = [q["sql"] for q in captured.captured_queries]
        assert any("COUNT(*) OVER ()" in q for q in sql)
        assert not any(q.startswith("SELECT COUNT(*) FROM (SELECT") for q in sql)
    monkeypatch.setattr(selectors, "execution_first_page_counted", lambda *a, **k: None)
    assert _shown(page.get(path).content.decode()) == (ids, total, more)
    rest, _, further = _shown(page.get(more.replace("&amp;", "&")).content.decode())
    assert len(rest) == 11 and not further
    assert not set(rest) & set(ids)


def test_no_match_and_other_lists_are_unchanged(viewer, agent):
    _runs(agent)
    page = browser(viewer)
    with CaptureQueriesContext(connection) as captured:
        body = page.get("/executions/?metadata=tenant%3Dnobody").content.decode()
    ids, total, more = _shown(body)
    assert ids == [] and not total and not more and "No executions match these filters" in body
    if connection.vendor == "postgresql":  # the window read finds nothing: no page, no count
        sql = [q["sql"] for q in captured.captured_queries]
        assert sum("executions_execution" in q and "ORDER BY" in q for q in sql) == 1
        assert not any(q.startswith("SELECT COUNT(*) FROM (SELECT") for q in sql)
    ids, total, more = _shown(page.get("/executions/?ordering=cost").content.decode())
    assert len(ids) == 50 and total.startswith("70 executions") and more
