"""Dashboard forms: post/redirect/get, the schema-driven payload editor, typed Run values."""

from __future__ import annotations

import json
import re

import pytest

from approvals.models import Webhook
from executions.forms import SchemaForm
from tests.executions.dashboard_helpers import browser, csrf_post, park, start

pytestmark = pytest.mark.django_db


@pytest.fixture
def parked(agent):
    execution = start(agent)
    return execution, park(execution)


def test_creating_a_webhook_redirects_and_shows_its_secret_once(owner):
    page = browser(owner)
    data = {"action": "create", "url": "https://example.com/hook", "events": ["*"]}
    response = csrf_post(page, "/settings/webhooks/", data)
    hook = Webhook.objects.get(workspace=owner.workspace)
    assert response.status_code == 302 and response["Location"].endswith(f"?hook={hook.pk}")
    landed = page.get(response["Location"]).content.decode()
    assert hook.secret in landed and "shown once" in landed
    # A reload is a GET: no second webhook, and the secret is not shown again.
    again = page.get(response["Location"]).content.decode()
    assert hook.secret not in again
    assert Webhook.objects.filter(workspace=owner.workspace).count() == 1


def test_a_bad_webhook_url_is_a_422_naming_the_field(owner):
    response = csrf_post(
        browser(owner),
        "/settings/webhooks/",
        {"action": "create", "url": "ftp://x", "events": ["*"]},
    )
    assert response.status_code == 422
    assert "url" in response.content.decode().lower()
    assert not Webhook.objects.exists()


def test_the_payload_editor_is_generated_from_the_payload_schema(teammate, parked):
    _, approval = parked
    body = browser(teammate).get(f"/approvals/{approval.pk}/").content.decode()
    amount = re.search(r'<input[^>]*name="edit-arguments__amount"[^>]*>', body)
    assert amount and 'value="120' in amount.group(0)
    assert 'name="edit-arguments__order_id"' in body and 'value="A-1001"' in body
    assert "Edit as JSON instead" in body  # the JSON editor stays, as the advanced option


def test_a_schema_violation_is_shown_next_to_its_field_then_a_valid_edit_approves(teammate, parked):
    execution, approval = parked
    page = browser(teammate)
    fields = {"decision": "edit", "edit_mode": "fields", "edit-tool": "refund",
              "edit-arguments__order_id": "A-1001"}  # fmt: skip
    response = csrf_post(
        page,
        f"/approvals/{approval.pk}/decide/",
        {**fields, "edit-arguments__amount": "9000"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 422
    body = response.content.decode()
    field = body.split('name="edit-arguments__amount"')[1].split('<div class="field')[0]
    assert "errorlist" in field and "500" in field
    approval.refresh_from_db()
    assert approval.status == "pending"

    response = csrf_post(
        page,
        f"/approvals/{approval.pk}/decide/",
        {**fields, "edit-arguments__amount": "80", "reason": "partial refund"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200, response.content.decode()[:500]
    approval.refresh_from_db()
    assert approval.status == "approved"
    assert approval.result_payload == {"tool": "refund", "arguments": {"order_id": "A-1001",
                                                                       "amount": 80}}  # fmt: skip
    assert isinstance(approval.result_payload["arguments"]["amount"], int)


def test_whole_numbers_stay_integers_in_schema_forms():
    schema = {"type": "object", "properties": {"amount": {"type": "number"},
                                               "count": {"type": "integer"}}}  # fmt: skip
    form = SchemaForm({"run-amount": "180", "run-count": "3"}, schema=schema, prefix="run")
    assert form.is_valid(), form.errors
    assert json.dumps(form.value()) == '{"amount": 180, "count": 3}'
    form = SchemaForm({"run-amount": "180.5"}, schema=schema, prefix="run")
    assert form.is_valid() and form.value() == {"amount": 180.5}


def test_cancel_takes_a_reason_from_the_form(teammate, agent):
    execution = start(agent)
    response = csrf_post(
        browser(teammate), f"/executions/{execution.pk}/cancel/", {"reason": "wrong customer"}
    )
    assert response.status_code == 302
    execution.refresh_from_db()
    assert execution.status == "cancelled"
    assert execution.transitions.filter(message__contains="wrong customer").exists()
