"""The execution page live: opened mid-run, or cut off and reconnected mid-run, it ends up
showing every streamed event and timeline entry exactly once, in order — the same as a reload."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from executions import services
from executions.live import events
from executions.models import Execution, ExecutionEvent

pytestmark = pytest.mark.browser


def page_contents(page) -> dict:
    return page.evaluate(
        """() => ({
            events: [...document.querySelectorAll('#exec-stream > [id^="ev-"]')]
                .map(e => [e.id, e.textContent]),
            entries: [...document.querySelectorAll('#exec-timeline > li')]
                .map(li => [li.dataset.seq, li.querySelector('.type').textContent]),
            count: document.getElementById('timeline-count').textContent.trim(),
        })"""
    )


def start_research(demo, owner) -> Execution:
    execution, _ = services.execution_start(
        workspace=owner.workspace,
        agent=demo["research-assistant"],
        input={"question": "What is 17 times 23, and where is order A-1001?"},
    )
    return execution


def wait_for_first_event(execution: Execution) -> None:
    deadline = time.monotonic() + 15
    while not ExecutionEvent.objects.filter(execution_id=execution.pk, type="content").exists():
        assert time.monotonic() < deadline, "the run streamed nothing"
        time.sleep(0.01)


def wait_for_drop(page, timeout: float = 15) -> None:
    """Until the page's socket has closed once (`window.__drops`, counted by the test). Polled
    from here: Playwright's wait_for_function evaluates its predicate with eval while it polls,
    which the pages' Content-Security-Policy refuses."""
    deadline = time.monotonic() + timeout
    while not page.evaluate("window.__drops") >= 1:
        assert time.monotonic() < deadline, "the socket did not drop"
        page.wait_for_timeout(50)


def assert_complete_and_equal_to_a_reload(page) -> None:
    expect(page.locator("#exec-header .badge")).to_have_text("Completed", timeout=30_000)
    # The last messages of the run may still be on their way after the badge turned.
    time.sleep(1.0)
    live = page_contents(page)
    page.reload()
    expect(page.locator("#exec-header .badge")).to_have_text("Completed")
    reloaded = page_contents(page)
    assert live["events"] == reloaded["events"]
    assert live["entries"] == reloaded["entries"]
    seqs = [int(seq) for seq, _ in live["entries"]]
    assert seqs == list(range(1, len(seqs) + 1)), "entries once each, in order"
    assert live["count"] == f"{len(seqs)} entries"
    assert len({event_id for event_id, _ in live["events"]}) == len(live["events"])


def test_a_page_opened_mid_run_shows_every_event_and_entry_once_in_order(
    open_page, demo, owner, server
):
    page = open_page(owner, "/executions/")
    execution = start_research(demo, owner)
    wait_for_first_event(execution)
    page.goto(f"{server.url}/executions/{execution.pk}/")
    assert Execution.objects.get(pk=execution.pk).status == "running", "opened after the run"
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    assert_complete_and_equal_to_a_reload(page)


def test_a_page_whose_socket_drops_mid_run_catches_up_after_reconnecting(
    open_page, demo, owner, server
):
    page = open_page(owner, "/executions/")
    execution = start_research(demo, owner)
    page.goto(f"{server.url}/executions/{execution.pk}/")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    wait_for_first_event(execution)
    # What the server does when the channel layer returns after an outage: every socket is
    # told to reconnect (1012), and each page catches up from what it shows.
    page.evaluate(
        "window.__drops = 0; document.addEventListener('htmx:wsClose', () => window.__drops++)"
    )
    events.send(events.execution_group(execution.pk), {"type": "live.resync"})
    wait_for_drop(page)
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    assert_complete_and_equal_to_a_reload(page)


def test_a_page_opened_after_the_run_gets_nothing_twice(open_page, demo, owner, server):
    execution = start_research(demo, owner)
    deadline = time.monotonic() + 30
    while Execution.objects.get(pk=execution.pk).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    page = open_page(owner, f"/executions/{execution.pk}/")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    before = page_contents(page)
    # Nudge the socket as a late message would: nothing the page shows is sent again.
    events.send(events.execution_group(execution.pk), {"type": "live.resync"})
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    time.sleep(0.5)
    assert page_contents(page) == before


def test_a_list_page_catches_up_after_its_socket_reconnects(open_page, demo, owner, server):
    page = open_page(owner, "/executions/")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    with page.expect_request(lambda r: "/executions/changes" in r.url) as caught:
        events.send(events.workspace_executions_group(owner.workspace.pk), {"type": "live.resync"})
    request = caught.value
    # `since` is set by static/js (no eval under the CSP): what changed while it was away.
    assert "since=" in request.url
    assert request.response().status == 200
    execution = start_research(demo, owner)
    expect(page.locator(f"#exec-{execution.pk}")).to_be_visible(timeout=30_000)
