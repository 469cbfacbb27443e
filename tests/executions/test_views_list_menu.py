"""The list's agent filter: its options are kept per process for a few seconds (issue 12), and
an agent created, renamed or deleted in this process shows there at once."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from executions import services
from tests.executions.dashboard_helpers import browser

pytestmark = pytest.mark.django_db


def options(html: str) -> list[str]:
    menu = re.search(r'<select id="f-agent" name="agent_id">(.*?)</select>', html, re.S).group(1)
    return re.findall(r"<option [^>]*>([^<]*)</option>", menu)


def test_the_agent_menu_follows_creates_renames_and_deletes(viewer, agent):
    page = browser(viewer)
    assert options(page.get("/executions/").content.decode()) == ["Any agent", "doubler"]
    other = services.agent_create(workspace=agent.workspace, name="auditor", type="workflow")
    assert options(page.get("/executions/").content.decode()) == ["Any agent", "auditor", "doubler"]
    services.agent_update(agent=other, data={"name": "zeta"})
    assert options(page.get("/executions/").content.decode()) == ["Any agent", "doubler", "zeta"]
    services.agent_delete(agent=other)
    assert options(page.get("/executions/").content.decode()) == ["Any agent", "doubler"]


def test_the_agent_menu_is_read_once_and_marks_the_chosen_agent(viewer, agent):
    page = browser(viewer)
    page.get("/executions/")
    with CaptureQueriesContext(connection) as captured:
        html = page.get(f"/executions/?agent_id={agent.pk}").content.decode()
    assert f'<option value="{agent.pk}" selected>doubler</option>' in html
    reads = [q["sql"] for q in captured.captured_queries if 'FROM "executions_agent"' in q["sql"]]
    assert not any('"executions_agent"."name" ASC' in sql for sql in reads)
