"""The dashboard in a real browser: log in, run, watch live, approve, and the role rules."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from executions import services
from executions.live.follow import wait_settled_sync
from executions.models import DemoOrder, Execution

pytestmark = pytest.mark.browser


def start_refund(demo, owner, amount: float) -> Execution:
    execution, _ = services.execution_start(
        workspace=owner.workspace,
        agent=demo["refund-desk"],
        input={"order_id": "A-1003", "amount": amount},
    )
    parked = wait_settled_sync(execution.pk, timeout=15)
    assert parked.status == "awaiting_approval", parked.error
    return parked


def test_a_run_started_from_the_agents_page_changes_status_live_on_the_list(
    open_page, demo, owner, server
):
    watcher = open_page(owner, "/executions/")
    expect(watcher.locator("#live-state")).to_have_attribute("data-state", "open")
    watcher.evaluate("window.__not_reloaded = true")

    runner = watcher.context.new_page()
    runner.goto(f"{server.url}/agents/")
    runner.get_by_role("link", name="research-assistant").click()
    runner.fill("#id_run-question", "What is durable execution?")
    runner.get_by_role("button", name="Start execution").click()
    runner.wait_for_url(f"{server.url}/executions/*/")
    execution_id = runner.url.rstrip("/").split("/")[-1]
    expect(runner.locator("#exec-header .badge")).to_have_text("Completed", timeout=20_000)
    expect(runner.locator("#exec-stream")).to_contain_text("You asked")

    row = watcher.locator(f"#exec-{execution_id}")
    expect(row).to_be_visible()
    expect(row.locator(".badge")).to_have_text("Completed", timeout=20_000)
    assert watcher.evaluate("window.__not_reloaded") is True
    assert watcher.locator("#exec-rows tr").first.get_attribute("id") == f"exec-{execution_id}"


def test_the_lists_total_counts_the_runs_that_arrive_live(open_page, demo, owner):
    def refund(amount: float) -> Execution:
        execution, _ = services.execution_start(
            workspace=owner.workspace,
            agent=demo["refund-desk"],
            input={"order_id": "A-1003", "amount": amount},
        )
        return wait_settled_sync(execution.pk, timeout=15)

    refund(20)
    watcher = open_page(owner, "/executions/")
    expect(watcher.locator("#live-state")).to_have_attribute("data-state", "open")
    expect(watcher.locator("#exec-total")).to_have_text("1 execution")
    second = refund(30)
    expect(watcher.locator(f"#exec-{second.pk}")).to_be_visible()
    expect(watcher.locator("#exec-total")).to_have_text("2 executions")
    # An update in place (the same run again) is not a new run.
    expect(watcher.locator(f"#exec-{second.pk} .badge")).to_have_text("Completed")
    assert watcher.locator("#exec-rows > tr[id^='exec-']").count() == 2


def test_a_reviewer_edits_the_refund_amount_approves_and_sees_it_finish(
    open_page, demo, owner, teammate
):
    execution = start_refund(demo, owner, 250)
    page = open_page(teammate, f"/executions/{execution.pk}/")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    expect(page.locator("#exec-header .badge")).to_have_text("Awaiting approval")
    page.get_by_text("Edit the payload, then approve").click()
    # The payload's schema as fields (the JSON editor is the advanced option, tested apart).
    page.fill("#id_edit-amount", "90")
    page.locator("#edit-fields-form").get_by_role("button", name="Approve with changes").click()

    expect(page.locator(".resolved-note")).to_contain_text("Approved by rory")
    expect(page.locator(".diff ins")).to_have_text("90")
    expect(page.locator("#exec-header .badge")).to_have_text("Completed", timeout=20_000)
    order = DemoOrder.objects.get(workspace=owner.workspace, order_id="A-1003")
    assert order.refunded == 90
    assert order.refund_count == 1


def test_a_viewer_sees_no_approve_button_and_a_forged_post_is_refused(
    open_page, demo, owner, viewer, server
):
    execution = start_refund(demo, owner, 300)
    approval = execution.approvals.get()
    page = open_page(viewer, f"/approvals/{approval.pk}/")
    expect(page.locator("#approval-panel")).to_contain_text("reviewers and admins decide it")
    expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post(
        f"{server.url}/approvals/{approval.pk}/decide/",
        form={"decision": "approve", "csrfmiddlewaretoken": token},
        headers={"Referer": page.url},
    )
    assert response.status == 403
    approval.refresh_from_db()
    assert approval.status == "pending"


def test_when_one_reviewer_approves_the_other_sees_it_resolved_live(
    open_page, demo, owner, teammate
):
    execution = start_refund(demo, owner, 150)
    approval = execution.approvals.get()
    watching = open_page(owner, "/approvals/?tab=all")
    deciding = open_page(teammate, f"/approvals/{approval.pk}/")
    expect(watching.locator("#live-state")).to_have_attribute("data-state", "open")
    item = watching.locator(f"#approval-item-{approval.pk}")
    expect(item).to_contain_text("Pending")
    watching.evaluate("window.__not_reloaded = true")

    deciding.fill("#decide-reason", "customer is right")
    deciding.get_by_role("button", name="Approve", exact=True).click()
    expect(deciding.locator(".resolved-note")).to_contain_text("Approved by rory")

    expect(item).to_contain_text("Approved by rory")
    expect(item).to_contain_text("customer is right")
    expect(watching.locator("#nav-approvals-count")).to_have_attribute("data-count", "0")
    assert watching.evaluate("window.__not_reloaded") is True
    deadline = time.monotonic() + 15
    while Execution.objects.get(pk=execution.pk).status != "completed":
        assert time.monotonic() < deadline, "the approved execution did not finish"
        time.sleep(0.1)
