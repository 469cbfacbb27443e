"""The overview reads only what it shows (the approvals card: a title, a time and an agent's
name; the latest runs: no documents, no agent metadata), and its recent rows' tags write what
the template markup they replace wrote (`{% url %}`, the _duration.html include)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.template import Context, Template
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from executions import lifecycle
from executions.models import Execution
from executions.pages.timing import attach_times
from tests.executions.dashboard_helpers import REFUND_SPEC, browser, park, start

pytestmark = pytest.mark.django_db


def test_overview_reads_only_what_it_shows(viewer, agent):
    parked = start(agent)
    park(parked)
    done = start(agent)
    lifecycle.transition(done, "running", type="start", step_path="main[0]")
    lifecycle.transition(done, "completed", type="finish", fields={"duration_ms": 20})
    page = browser(viewer)
    page.get("/")
    with CaptureQueriesContext(connection) as captured:
        body = page.get("/").content.decode()
    assert REFUND_SPEC["title"] in body and f"· {agent.name}</p>" in body
    card = next(q["sql"] for q in captured.captured_queries if "approvals_approval" in q["sql"]
                and "LIMIT 1" in q["sql"])  # fmt: skip
    for unread in ('"payload"', '"payload_schema"', '"input"', '"state"', '"metadata"'):
        assert unread not in card
    recent = next(q["sql"] for q in captured.captured_queries if "LIMIT 8" in q["sql"])
    for unread in ('"input"', '"output"', '"metadata"', '"description"', '"config"'):
        assert unread not in recent
    assert f'<tr id="recent-{done.pk}"><td class="id"><a href="/executions/{done.pk}/">' in body


def test_recent_row_tags_equal_the_markup_they_replace(agent):
    runs = [start(agent), start(agent)]
    lifecycle.transition(runs[1], "running", type="start", step_path="main[0]")
    executions = attach_times(list(Execution.objects.filter(pk__in=[r.pk for r in runs])))
    old = Template('{% load steward %}{% url "execution_detail" e.pk %}|{% url "agent_detail" '
                   'e.agent_id %}|{% include "executions/_duration.html" %}')  # fmt: skip
    new = Template('{% load steward_rows %}{% pk_url "execution_detail" e.pk %}|{% pk_url '
                   '"agent_detail" e.agent_id %}|{% duration_cell e %}')  # fmt: skip
    for e in executions:
        before, after = (t.render(Context({"e": e})) for t in (old, new))
        assert before == after
        assert after.startswith(reverse("execution_detail", args=[e.pk]))
