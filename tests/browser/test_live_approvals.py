"""Approvals live: the approval page follows its execution after a decision, the inbox's tab
counts and order follow the page's own rules, decision notices do not move the page, and a
filtered list gets no updates for rows it does not show."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from approvals import services as approval_services
from approvals.models import Approval
from executions import services
from executions.lifecycle import Actor
from executions.live import events
from executions.live.follow import wait_settled_sync
from executions.models import Execution
from tests.browser.test_live_execution import wait_for_drop

pytestmark = pytest.mark.browser


def park_refund(demo, owner, amount: float, order: str = "A-1003") -> Execution:
    execution, _ = services.execution_start(
        workspace=owner.workspace,
        agent=demo["refund-desk"],
        input={"order_id": order, "amount": amount},
    )
    parked = wait_settled_sync(execution.pk, timeout=60)
    assert parked.status == "awaiting_approval", parked.error
    return parked


def count_oob_errors(page) -> None:
    page.evaluate(
        """() => { window.__oob = 0;
        document.body.addEventListener('htmx:oobErrorNoTarget', () => window.__oob++); }"""
    )


def test_the_approval_page_follows_its_execution_after_a_decision_in_both_browsers(
    open_page, demo, owner, teammate, viewer
):
    execution = park_refund(demo, owner, 150)
    approval = execution.approvals.get()
    deciding = open_page(teammate, f"/approvals/{approval.pk}/")
    watching = open_page(viewer, f"/approvals/{approval.pk}/")
    for page in (deciding, watching):
        expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
        expect(page.locator("#approval-execution .card-head .badge")).to_have_text(
            "Awaiting approval"
        )
    steps_before = watching.locator("#approval-execution .timeline li").count()

    deciding.get_by_role("button", name="Approve", exact=True).click()
    expect(deciding.locator(".resolved-note")).to_contain_text("Approved by rory")
    for page in (deciding, watching):
        expect(page.locator("#approval-execution .card-head .badge")).to_have_text(
            "Completed", timeout=30_000
        )
        expect(page.locator("#approval-execution .timeline li")).not_to_have_count(steps_before)
        expect(page.locator("#approval-execution .timeline")).to_contain_text("approved by rory")


def test_inbox_tab_counts_follow_the_nav_pill_and_new_items_arrive_at_the_end(
    open_page, demo, owner, teammate
):
    first = park_refund(demo, owner, 150, "A-1001")
    second = park_refund(demo, owner, 160, "A-1002")
    page = open_page(teammate, "/approvals/?tab=all")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    count_oob_errors(page)
    expect(page.locator("#tab-count-all")).to_have_text("2")
    expect(page.locator("#nav-approvals-count")).to_have_attribute("data-count", "2")

    # A new approval goes where a reload would put it: last (the inbox is oldest first).
    third = park_refund(demo, owner, 170, "A-1003")
    newest = third.approvals.get()
    expect(page.locator("#inbox-items > li")).to_have_count(3)
    expect(page.locator("#inbox-items > li").last).to_have_id(f"approval-item-{newest.pk}")
    expect(page.locator("#tab-count-all")).to_have_text("3")

    approval_services.approval_decide(
        approval=first.approvals.get(), decision="approve", actor=Actor.for_user(owner.user)
    )
    expect(page.locator("#nav-approvals-count")).to_have_attribute("data-count", "2")
    expect(page.locator("#tab-count-all")).to_have_text("2")
    live_order = page.eval_on_selector_all(
        "#inbox-items > li.inbox-item:not(.resolved)", "els => els.map(e => e.id)"
    )
    page.reload()
    expect(page.locator("#tab-count-all")).to_have_text("2")
    reloaded_order = page.eval_on_selector_all("#inbox-items > li", "els => els.map(e => e.id)")
    assert (
        live_order
        == reloaded_order
        == [
            f"approval-item-{second.approvals.get().pk}",
            f"approval-item-{newest.pk}",
        ]
    )


def test_decision_notices_do_not_move_the_page_during_keyboard_triage(
    open_page, demo, owner, teammate
):
    for n, order in enumerate(("A-1001", "A-1002", "A-1003")):
        park_refund(demo, owner, 150 + n, order)
    page = open_page(teammate, "/approvals/?tab=all")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    heading = page.locator("h1")
    top = heading.bounding_box()["y"]
    list_top = page.locator("#inbox-items").bounding_box()["y"]
    for expected in (1, 2):
        page.keyboard.press("j")
        page.keyboard.press("a")
        expect(page.locator("#toasts .toast")).to_have_count(expected)
        assert heading.bounding_box()["y"] == top
        assert page.locator("#inbox-items").bounding_box()["y"] == list_top
    expect(page.locator("#toasts")).to_have_css("position", "fixed")


def test_a_filtered_list_gets_nothing_for_runs_it_does_not_show(open_page, demo, owner, server):
    page = open_page(owner, "/executions/?status=failed")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    count_oob_errors(page)
    errors = []
    page.on(
        "console", lambda msg: errors.append(msg.text) if "oobErrorNoTarget" in msg.text else None
    )
    execution, _ = services.execution_start(
        workspace=owner.workspace,
        agent=demo["research-assistant"],
        input={"question": "What is 2 + 2?"},
    )
    deadline = time.monotonic() + 60
    while Execution.objects.get(pk=execution.pk).status != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(1.0)
    expect(page.locator(f"#exec-{execution.pk}")).to_have_count(0)
    assert page.evaluate("window.__oob") == 0
    assert errors == []


def test_a_filtered_list_has_no_htmx_errors_through_a_reconnect(open_page, demo, owner, server):
    """The catch-up after a reconnect sends only rows the page shows (updated in place) and new
    rows its filters take in: a run that does not match makes no console error."""
    shown = park_refund(demo, owner, 150, "A-1001")
    page = open_page(owner, "/executions/?status=awaiting_approval")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    expect(page.locator(f"#exec-{shown.pk}")).to_have_count(1)
    problems = []
    page.on(
        "console",
        lambda msg: (
            problems.append(msg.text) if msg.type == "error" or "htmx:" in msg.text else None
        ),
    )
    page.evaluate(
        """() => { window.__htmxErrors = [];
        for (const name of ['htmx:oobErrorNoTarget', 'htmx:swapError', 'htmx:targetError',
                            'htmx:responseError', 'htmx:wsError'])
            document.body.addEventListener(name, () => window.__htmxErrors.push(name)); }"""
    )
    # While the socket is away, a run the filter does not take runs to the end and the shown
    # run is approved: both changed in the catch-up's window.
    page.evaluate(
        "window.__drops = 0; document.addEventListener('htmx:wsClose', () => window.__drops++)"
    )
    other, _ = services.execution_start(
        workspace=owner.workspace,
        agent=demo["research-assistant"],
        input={"question": "What is 2 + 2?"},
    )
    assert wait_settled_sync(other.pk, timeout=60).status == "completed"
    approval_services.approval_decide(
        approval=shown.approvals.get(), decision="approve", actor=Actor.for_user(owner.user)
    )
    assert wait_settled_sync(shown.pk, timeout=60).status == "completed"
    with page.expect_response(lambda r: "/executions/changes" in r.url) as caught:
        events.send(events.workspace_executions_group(owner.workspace.pk), {"type": "live.resync"})
    assert caught.value.status == 200
    wait_for_drop(page)
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    # The shown row caught up in place; the other run never reached the page.
    expect(page.locator(f"#exec-{shown.pk}")).to_have_attribute("data-status", "completed")
    expect(page.locator(f"#exec-{other.pk}")).to_have_count(0)
    time.sleep(0.5)
    assert page.evaluate("window.__htmxErrors") == []
    assert problems == []


def test_a_live_inbox_insert_goes_where_the_tabs_order_puts_it(open_page, demo, owner, teammate):
    """Pending tabs list soonest due first: a new approval due before the ones shown arrives at
    the top, as a reload shows it, not at the end."""
    later = [park_refund(demo, owner, 150 + n, order).approvals.get()
             for n, order in enumerate(("A-1001", "A-1002"))]  # fmt: skip
    for hours, approval in enumerate(later, start=1):
        Approval.objects.filter(pk=approval.pk).update(
            expires_at=timezone.now() + timedelta(hours=hours)
        )
    page = open_page(teammate, "/approvals/?tab=all")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    count_oob_errors(page)
    soonest = park_refund(demo, owner, 170, "A-1003").approvals.get()  # due in minutes
    expect(page.locator("#inbox-items > li")).to_have_count(3)
    assert page.evaluate("window.__oob") == 0
    live_order = page.eval_on_selector_all("#inbox-items > li", "els => els.map(e => e.id)")
    page.reload()
    reloaded = page.eval_on_selector_all("#inbox-items > li", "els => els.map(e => e.id)")
    assert live_order == reloaded == [f"approval-item-{a.pk}" for a in (soonest, *later)]
