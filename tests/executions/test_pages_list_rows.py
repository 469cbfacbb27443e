"""The list page's rows (one `execution_rows` tag) are the live fan-out's `row` partial
(contexts.row_html), byte for byte but for the out-of-band attribute, for every kind of row; the
page reads only the columns a row shows and its queries do not grow with its rows."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from executions import lifecycle
from executions.models import Execution
from executions.pages.contexts import row_html
from executions.templatetags.steward import duration, iso, money, seconds_since, short_id
from executions.templatetags.steward import tokens as token_text
from executions.templatetags.steward_rows import _stamp
from tests.executions.dashboard_helpers import browser, park, start

pytestmark = pytest.mark.django_db

TICKING = re.compile(r'datetime="[^"]*" data-elapsed')  # a live clock's virtual start


def _masked(html: str) -> str:
    """Without what follows the clock: a ticking clock's start and every <time>'s text."""
    return re.sub(r"(<time [^>]*>)[^<]*(</time>)", r"\1\2", TICKING.sub("data-elapsed", html))


def _runs(agent):
    """Queued, running, parked, completed (with a session, tokens and a cost), failed, and a
    child run, their times in the past."""
    queued = start(agent)
    running = start(agent, session_id="sess-<b>&1")
    lifecycle.transition(running, "running", type="start", step_path="main[0]")
    parked = start(agent)
    park(parked)
    done = start(agent, session_id="a-session-id-longer-than-eighteen")
    lifecycle.transition(done, "running", type="start", step_path="main[0]")
    lifecycle.transition(done, "completed", type="finish", fields={"duration_ms": 1_234})
    failed = start(agent, parent=done)
    lifecycle.transition(failed, "running", type="start", step_path="main[0]")
    lifecycle.transition(failed, "failed", type="error", fields={"duration_ms": 90_000})
    earlier = timezone.now() - timedelta(days=3, hours=2)
    Execution.objects.filter(pk=done.pk).update(
        token_usage={"prompt_tokens": 1200, "completion_tokens": 34}, cost=Decimal("0.0123"),
        started_at=earlier, completed_at=earlier + timedelta(seconds=1.234),
    )  # fmt: skip
    return [queued, running, parked, done, failed]


def _tbody(body: str) -> str:
    return body.split('<tbody id="exec-rows">', 1)[1].split("</tbody>", 1)[0]


def test_page_rows_are_the_live_rows(viewer, agent):
    runs = _runs(agent)
    page = browser(viewer)
    rows = _masked(_tbody(page.get("/executions/").content.decode()))
    fragment = _masked(
        page.get("/executions/?fragment=rows", HTTP_HX_REQUEST="true").content.decode()
    )
    for run in runs:
        fresh = Execution.objects.select_related("agent", "agent_version").get(pk=run.pk)
        live = row_html(fresh, upsert=False).replace('hx-swap-oob="true"', "")
        live = _masked(live)
        assert f"\n        {live}\n        " in rows, run.status
        assert live in fragment
    assert rows.count("<tr id=") == len(runs)
    assert "sess-&lt;b&gt;&amp;1" in rows and "child run" in rows


def test_list_queries_do_not_grow_with_rows(viewer, agent):
    page = browser(viewer)
    _runs(agent)
    page.get("/executions/")
    with CaptureQueriesContext(connection) as few:
        page.get("/executions/?ordering=cost")
    _runs(agent)
    _runs(agent)
    with CaptureQueriesContext(connection) as more:
        body = page.get("/executions/?ordering=cost").content.decode()
    assert _tbody(body).count("<tr id=") == 15
    assert len(more.captured_queries) == len(few.captured_queries)
    listing = next(q["sql"] for q in more.captured_queries if "ORDER BY" in q["sql"] and
                   "executions_execution" in q["sql"] and "LIMIT 51" in q["sql"])  # fmt: skip
    for unread in ('"input"', '"output"', '"metadata"', '"config"', '"input_schema"'):
        assert unread not in listing


def test_plain_cells_have_no_markup_characters():
    """What the row writes unescaped (steward_rows, PLAIN): ids, times, durations, tokens, money."""
    moment = datetime(2026, 11, 30, 3, 4, 5, 678901, tzinfo=UTC)
    values = [short_id(uuid.uuid4()), iso(moment), _stamp(moment), seconds_since(moment)]
    values += [duration(ms) for ms in (None, 0, 999, 1_500, 61_000, 3_700_000, 10**9)]
    values += [money(v) for v in (None, 0, Decimal("0.00042"), Decimal("0.0123"), 12345.678, -2)]
    values += [token_text(u) for u in (None, {}, {"total_tokens": 1234567}, {"prompt_tokens": 3})]
    for value in values:
        assert not set(value) & set("<>&\"'"), value
    assert _stamp(moment) == moment.strftime("%Y-%m-%d %H:%M:%S")
