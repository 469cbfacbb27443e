"""Forms, dialogs and content in a real browser: in-page dialogs instead of prompt/confirm,
post/redirect/get, schema-driven payload edits, typed Run values, and readable output."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from approvals.models import Approval
from executions import services
from executions.live.follow import wait_settled_sync
from executions.models import ApiKey, Execution

pytestmark = pytest.mark.browser


def no_native_dialogs(page) -> list:
    """window.prompt / confirm / alert would show up here (and fail the test)."""
    seen: list = []
    page.on("dialog", lambda dialog: (seen.append(dialog.message), dialog.dismiss()))
    return seen


def test_reject_and_cancel_use_in_page_dialogs_with_a_reason(open_page, demo, owner, teammate):
    parked, _ = services.execution_start(
        workspace=owner.workspace, agent=demo["refund-desk"],
        input={"order_id": "A-1003", "amount": 300},
    )  # fmt: skip
    parked = wait_settled_sync(parked.pk, timeout=15)
    page = open_page(teammate, "/approvals/?tab=all")
    native = no_native_dialogs(page)
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    page.keyboard.press("j")
    page.keyboard.press("r")
    dialog = page.locator("dialog[data-ask]")
    expect(dialog).to_be_visible()
    expect(dialog.get_by_label(re.compile("Reason"))).to_be_focused()
    page.keyboard.type("duplicate request")
    page.keyboard.press("Enter")  # Enter in the reason field confirms
    expect(dialog).to_have_count(0)
    approval = parked.approvals.get()
    deadline_ok = False
    for _ in range(100):
        approval.refresh_from_db()
        if approval.status == "rejected":
            deadline_ok = True
            break
        page.wait_for_timeout(100)
    assert deadline_ok, approval.status
    assert approval.decisions.get().reason == "duplicate request"

    running, _ = services.execution_start(
        workspace=owner.workspace, agent=demo["refund-desk"],
        input={"order_id": "A-1001", "amount": 400},
    )  # fmt: skip
    wait_settled_sync(running.pk, timeout=15)
    page.goto(page.url.split("/approvals/")[0] + f"/executions/{running.pk}/")
    page.get_by_role("button", name="Cancel execution").click()
    dialog = page.locator("dialog[data-ask]")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")  # Esc keeps the execution
    expect(dialog).to_have_count(0)
    assert Execution.objects.get(pk=running.pk).status == "awaiting_approval"
    page.get_by_role("button", name="Cancel execution").click()
    page.keyboard.type("wrong customer")
    dialog.get_by_role("button", name="Cancel execution").click()
    expect(page.locator("#exec-header .badge")).to_have_text("Cancelled")
    assert (
        Execution.objects.get(pk=running.pk)
        .transitions.filter(message__contains="wrong customer")
        .exists()
    )
    assert native == []


def test_keys_post_redirect_get_and_the_run_form_keeps_integers(open_page, demo, owner, server):
    page = open_page(owner, "/settings/")
    native = no_native_dialogs(page)
    page.fill("#key-name", "billing")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator("#new-key")).to_be_visible()
    page.reload()  # a GET: no second key, and the secret is gone
    expect(page.locator("#new-key")).to_have_count(0)
    assert ApiKey.objects.filter(workspace=owner.workspace, name="billing").count() == 1
    page.get_by_role("button", name="Revoke").first.click()
    page.locator("dialog[data-ask]").get_by_role("button", name="Revoke key").click()
    expect(page.locator(".alert.success, .toast")).to_contain_text("Revoked")
    assert native == []

    page.goto(f"{server.url}/agents/{demo['refund-desk'].pk}/")
    page.fill("#id_run-order_id", "A-1002")
    page.fill("#id_run-amount", "180")
    page.get_by_role("button", name="Start execution").click()
    page.wait_for_url(re.compile(r".*/executions/[0-9a-f-]+/$"))
    execution = Execution.objects.get(pk=page.url.rstrip("/").split("/")[-1])
    assert execution.input == {"order_id": "A-1002", "amount": 180}
    assert isinstance(execution.input["amount"], int)
    expect(page.locator("#approval-panel h2")).to_contain_text("Refund 180 on order A-1002?")


def test_the_payload_is_edited_through_schema_fields_with_errors_beside_them(
    open_page, demo, owner, teammate
):
    execution, _ = services.execution_start(
        workspace=owner.workspace, agent=demo["refund-desk"],
        input={"order_id": "A-1001", "amount": 250},
    )  # fmt: skip
    wait_settled_sync(execution.pk, timeout=15)
    approval = Approval.objects.get(execution=execution)
    page = open_page(teammate, f"/approvals/{approval.pk}/")
    page.get_by_text("Edit the payload, then approve").click()
    amount = page.locator("#id_edit-amount")
    expect(amount).to_have_value("250")
    amount.fill("-5")
    page.locator("#edit-fields-form").get_by_role("button", name="Approve with changes").click()
    field = page.locator(".field.has-error", has=page.locator("#id_edit-amount"))
    expect(field.locator(".errorlist")).to_contain_text("0")
    page.get_by_role("button", name="Edit as JSON instead").click()
    expect(page.locator("#edit-payload")).to_be_visible()
    page.get_by_role("button", name="Back to the form").click()
    page.locator("#id_edit-amount").fill("75")
    page.locator("#edit-fields-form").get_by_role("button", name="Approve with changes").click()
    expect(page.locator(".resolved-note")).to_contain_text("Approved")
    approval.refresh_from_db()
    assert approval.result_payload == {"order_id": "A-1001", "amount": 75}


def test_streamed_output_tool_results_output_and_definition_read_well(
    open_page, demo, owner, server
):
    execution, _ = services.execution_start(
        workspace=owner.workspace, agent=demo["research-assistant"],
        input={"question": "Look up order A-1001 and tell me its total."},
    )  # fmt: skip
    wait_settled_sync(execution.pk, timeout=20)
    page = open_page(owner, f"/executions/{execution.pk}/")
    stream = page.locator("#exec-stream")
    text = stream.inner_text()
    assert "  " not in stream.locator(".content").evaluate_all(
        "spans => spans.map(s => s.textContent).join('')"
    )
    assert "💭" not in text
    expect(stream.locator(".thinking svg.icon")).to_have_count(1)
    # A model turn after tool lines starts after a blank line, not glued to the previous one.
    gap = stream.locator(".ev + .content").first.evaluate(
        "s => getComputedStyle(s, '::before').content"
    )
    assert gap not in ("none", "normal", ""), gap
    result = stream.locator("details.tool-result").first
    result.locator("summary").click()
    expect(result).to_contain_text("Ada Lovelace")
    expect(result.locator("pre.json")).to_be_visible()
    output = page.locator("#exec-data")
    assert '\\"' not in output.inner_text()

    failed, _ = services.execution_start(
        workspace=owner.workspace, agent=demo["refund-desk"],
        input={"order_id": "A-1002", "amount": 95},
    )  # fmt: skip
    wait_settled_sync(failed.pk, timeout=15)
    page.goto(f"{server.url}/executions/{failed.pk}/")
    expect(page.locator("#exec-header .badge")).to_have_text("Failed")
    expect(page.locator("#exec-data .error-text")).to_contain_text("exceeds what is left")

    page.goto(f"{server.url}/agents/{demo['refund-desk'].pk}/")
    tree = page.locator("#definition-tree")
    expect(tree.locator("pre.json")).to_be_visible()
    closed = tree.locator("details:not([open])")
    assert closed.count() > 0
    page.get_by_role("button", name="Expand all").click()
    expect(tree.locator("details:not([open])")).to_have_count(0)
    page.goto(f"{server.url}/agents/")
    row = page.locator("tr", has=page.get_by_role("link", name="refund-desk"))
    expect(row).to_contain_text("1 failed")
