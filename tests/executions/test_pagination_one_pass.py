"""A list marked one_pass_count (a metadata filter on PostgreSQL) reads its page's ids and its
count in one statement: the page, the total and its exactness are those of the usual page query
and capped count, in every ordering, past the cap and past the end (issue 12)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions import selectors
from executions.models import Execution
from executions.selectors import pagination
from tests.executions.dashboard_helpers import start

pytestmark = pytest.mark.django_db

ORDERINGS = ["-created_at", "created_at", "-cost", "cost", "-duration_ms", "started_at"]


@pytest.fixture
def runs(agent):
    made = [start(agent) for _ in range(17)]
    for i, run in enumerate(made):
        cost = None if i % 5 == 0 else Decimal(i % 3)
        Execution.objects.filter(pk=run.pk).update(
            cost=cost, duration_ms=(i % 4) or None, metadata={"tenant": "t1" if i % 2 else "t2"}
        )
    return made


def lists(agent, ordering):
    plain = selectors.order_executions(
        selectors.execution_list(
            workspace=agent.workspace, filters=selectors.ExecutionFilters()
        ).filter(metadata__tenant="t1"),
        ordering,
    )
    return plain, pagination.one_pass_count(plain)


@pytest.mark.parametrize("ordering", ORDERINGS)
@pytest.mark.parametrize("cap", [10_000, 5])
def test_one_pass_page_equals_the_usual_page(agent, runs, monkeypatch, ordering, cap):
    monkeypatch.setattr(pagination, "COUNT_CAP", cap)
    plain, marked = lists(agent, ordering)
    for page in range(1, 5):
        want = selectors.paginate(plain, page=page, limit=3)
        got = selectors.paginate(marked, page=page, limit=3)
        assert [e.pk for e in got.items] == [e.pk for e in want.items], page
        assert (got.total, got.exact) == (want.total, want.exact), page


def test_one_pass_reads_page_and_count_in_one_statement(agent, runs):
    _, marked = lists(agent, "-created_at")
    with CaptureQueriesContext(connection) as captured:
        got = selectors.paginate(marked, page=2, limit=3)
    assert got.total == 8 and got.exact and len(got.items) == 3
    counts = [q["sql"] for q in captured.captured_queries if "COUNT(" in q["sql"].upper()]
    assert len(counts) == 1 and "OVER" in counts[0].upper()
