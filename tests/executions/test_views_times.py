"""A run's time means one thing everywhere (issue 14, item 21): time running, with time waiting
(approval, input, sleep) shown apart, the same on the list, the overview and the execution
page, also for a row pushed live and for a run parked right now."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from executions import lifecycle
from executions.models import Execution, Transition
from executions.pages import timing
from executions.pages.contexts import row_html
from tests.executions.dashboard_helpers import browser, park, start

pytestmark = pytest.mark.django_db


def _finish_after_a_wait(agent):
    """Started 60 s ago: 2 s running, 30 s waiting for approval, 3 s running, completed."""
    execution = start(agent)
    park(execution)
    lifecycle.transition(execution, "running", type="approved", step_path="main[1]")
    lifecycle.transition(execution, "completed", type="finish", fields={"duration_ms": 35_000})
    begun = timezone.now() - timedelta(seconds=60)
    Execution.objects.filter(pk=execution.pk).update(
        started_at=begun, completed_at=begun + timedelta(seconds=35), duration_ms=35_000
    )
    at = {"start": 0, "wait": 2, "approved": 32, "finish": 35}
    for step in Transition.objects.filter(execution=execution):
        Transition.objects.filter(pk=step.pk).update(
            created_at=begun + timedelta(seconds=at.get(step.type, 0))
        )
    return Execution.objects.get(pk=execution.pk)


def _parked_after_4s(agent):
    """Started 50 s ago, parked on an approval 4 s in: (the run as stored, when it started)."""
    execution = start(agent)
    park(execution)
    begun = timezone.now() - timedelta(seconds=50)
    Execution.objects.filter(pk=execution.pk).update(started_at=begun)
    for step in Transition.objects.filter(execution=execution):
        offset = 4 if step.type == "wait" else 0
        Transition.objects.filter(pk=step.pk).update(created_at=begun + timedelta(seconds=offset))
    return Execution.objects.get(pk=execution.pk), begun


def _cell(body: str, execution_id) -> str:
    row = body.split(f'id="exec-{execution_id}"', 1)[1].split("</tr>", 1)[0]
    return row.split('class="num">', 1)[1].split("</td>", 1)[0]


def _recent(body: str, execution_id) -> str:
    row = body.split(f'id="recent-{execution_id}"', 1)[1].split("</tr>", 1)[0]
    return row.split('class="num">', 1)[1].split("</td>", 1)[0]


def test_list_overview_and_detail_show_time_running_with_waits_apart(viewer, agent):
    execution = _finish_after_a_wait(agent)
    page = browser(viewer)
    listed = _cell(page.get("/executions/").content.decode(), execution.pk)
    recent = _recent(page.get("/").content.decode(), execution.pk)
    live = _cell(row_html(Execution.objects.get(pk=execution.pk), upsert=False), execution.pk)
    agent_page = page.get(f"/agents/{agent.pk}/").content.decode()
    on_agent = agent_page.split(f"/executions/{execution.pk}/", 1)[1].split("</tr>", 1)[0]
    for cell in (listed, recent, live, on_agent):
        assert ">5.0 s<" in cell  # 35 s start to end, less the 30 s wait
        assert "+ 30.0 s waiting" in cell
        assert "35.0 s" not in cell
    detail = page.get(f"/executions/{execution.pk}/").content.decode()
    running = detail.split("<dt>Time running</dt>", 1)[1].split("</dd>", 1)[0]
    waiting = detail.split("<dt>Time waiting</dt>", 1)[1].split("</dd>", 1)[0]
    assert "5.0 s" in running
    assert "30.0 s" in waiting and "35.0 s start to end" in waiting


def test_a_parked_run_shows_its_running_time_and_the_wait_so_far(viewer, agent):
    execution, _ = _parked_after_4s(agent)
    page = browser(viewer)
    for cell in (
        _cell(page.get("/executions/").content.decode(), execution.pk),
        _recent(page.get("/").content.decode(), execution.pk),
    ):
        assert ">4.0 s<" in cell  # running until it parked; the clock does not run on
        assert "waiting <time" in cell and "data-elapsed" in cell
    detail = page.get(f"/executions/{execution.pk}/").content.decode()
    assert "4.0 s" in detail.split("<dt>Time running</dt>", 1)[1].split("</dd>", 1)[0]


def test_a_parked_runs_time_running_does_not_move_with_the_clock(agent):
    """Read its waits, later its times (as a page does, some ms apart): still exactly start to
    wait. It used to grow by the gap, so the list page and the live row could differ."""
    execution, begun = _parked_after_4s(agent)
    waits = timing.all_waits([execution])[execution.pk]
    time.sleep(0.03)
    times = timing.run_times(execution, waits)
    assert times["running_ms"] == 4000
    assert times["waiting_since"] == begun + timedelta(seconds=4)
