"""Deep numbered pages read their ids first, then the page's rows (a deferred join): the rows
and their order are the OFFSET query's, in every ordering the list offers (issue 12)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from executions import selectors
from executions.models import Execution
from executions.selectors import pagination
from tests.executions.dashboard_helpers import start

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "ordering", ["-created_at", "created_at", "-cost", "cost", "-duration_ms", "updated_at"]
)
def test_deep_page_rows_equal_the_offset_result(agent, monkeypatch, ordering):
    runs = [start(agent) for _ in range(23)]
    for i, run in enumerate(runs):
        # Ties and NULLs: the id breaks ties, NULLs sort last.
        cost = None if i % 5 == 0 else Decimal(i % 3)
        Execution.objects.filter(pk=run.pk).update(cost=cost, duration_ms=(i % 4) or None)
    monkeypatch.setattr(pagination, "DEFERRED_OFFSET", 4)
    qs = selectors.order_executions(
        selectors.execution_list(
            workspace=agent.workspace, filters=selectors.ExecutionFilters()
        ).select_related("agent"),
        ordering,
    )
    for page in range(1, 8):
        got = selectors.paginate(qs, page=page, limit=4)
        want = list(qs[(page - 1) * 4 : page * 4])
        assert [e.pk for e in got.items] == [e.pk for e in want], page
        assert got.total == qs.count()
    assert [e.agent.name for e in selectors.paginate(qs, page=3, limit=4).items] == [agent.name] * 4
