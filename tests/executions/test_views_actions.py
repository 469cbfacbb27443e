"""What the dashboard lets each role do, enforced on the server (forged posts included)."""

from __future__ import annotations

import json

import pytest

from approvals.models import Approval
from executions import lifecycle
from executions.models import ApiKey, Execution, Membership, SavedView
from tests.executions.dashboard_helpers import browser, csrf_post, park, start

pytestmark = pytest.mark.django_db


@pytest.fixture
def parked(agent):
    execution = start(agent)
    return execution, park(execution)


# --- approvals -------------------------------------------------------------------------------


def test_a_viewer_sees_no_approve_button_and_a_forged_post_gets_403(viewer, parked):
    execution, approval = parked
    page = browser(viewer)
    body = page.get(f"/approvals/{approval.pk}/").content.decode()
    assert 'value="approve"' not in body
    assert "reviewers and admins decide it" in body
    response = csrf_post(page, f"/approvals/{approval.pk}/decide/", {"decision": "approve"})
    assert response.status_code == 403
    approval.refresh_from_db()
    assert approval.status == "pending"


def test_a_decision_without_the_csrf_token_is_refused(teammate, parked):
    _, approval = parked
    response = browser(teammate).post(f"/approvals/{approval.pk}/decide/", {"decision": "approve"})
    assert response.status_code == 403
    approval.refresh_from_db()
    assert approval.status == "pending"


def test_a_reviewer_approves_and_the_execution_runs_again(teammate, parked):
    execution, approval = parked
    response = csrf_post(
        browser(teammate),
        f"/approvals/{approval.pk}/decide/",
        {"decision": "approve", "reason": "fine"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert "Approved" in response.content.decode() and "by rory" in response.content.decode()
    approval.refresh_from_db()
    execution.refresh_from_db()
    assert approval.status == "approved"
    assert execution.status == "running"


def test_an_edited_payload_is_checked_on_the_server_with_the_field_named(teammate, parked):
    _, approval = parked
    page = browser(teammate)
    bad = {"tool": "refund", "arguments": {"order_id": "A-1001", "amount": 9000}}
    response = csrf_post(
        page,
        f"/approvals/{approval.pk}/decide/",
        {"decision": "edit", "payload": json.dumps(bad)},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 422
    body = response.content.decode()
    assert "payload.arguments.amount" in body and "500" in body
    response = csrf_post(
        page,
        f"/approvals/{approval.pk}/decide/",
        {"decision": "edit", "payload": "{not json"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 422
    assert "not valid JSON" in response.content.decode()
    approval.refresh_from_db()
    assert approval.status == "pending"

    good = {"tool": "refund", "arguments": {"order_id": "A-1001", "amount": 80}}
    response = csrf_post(
        page,
        f"/approvals/{approval.pk}/decide/",
        {"decision": "edit", "payload": json.dumps(good)},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    body = response.content.decode()
    assert "<del>120.0</del>" in body and "<ins>80</ins>" in body
    approval.refresh_from_db()
    assert approval.result_payload == good


def test_a_second_decision_gets_409_saying_who_decided(teammate, owner, parked):
    _, approval = parked
    csrf_post(browser(teammate), f"/approvals/{approval.pk}/decide/", {"decision": "reject"})
    response = csrf_post(
        browser(owner),
        f"/approvals/{approval.pk}/decide/",
        {"decision": "approve"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 409
    assert "already rejected by rory" in response.content.decode()


def test_bulk_decisions_report_each_item(teammate, agent):
    approvals = [park(start(agent, n=i)) for i in range(3)]
    response = csrf_post(
        browser(teammate),
        "/approvals/bulk/",
        {"ids": [str(a.pk) for a in approvals[:2]], "decision": "approve", "reason": "batch"},
    )
    assert response.status_code == 302
    statuses = sorted(Approval.objects.values_list("status", flat=True))
    assert statuses == ["approved", "approved", "pending"]


def test_a_viewer_cannot_bulk_decide(viewer, parked):
    _, approval = parked
    response = csrf_post(
        browser(viewer), "/approvals/bulk/", {"ids": [str(approval.pk)], "decision": "approve"}
    )
    assert response.status_code == 403


def test_comments_are_kept_with_their_author(teammate, parked):
    # A reviewer: since 96cafc4 viewers read the discussion only (as in the API).
    _, approval = parked
    response = csrf_post(
        browser(teammate),
        f"/approvals/{approval.pk}/comments/",
        {"body": "Customer called twice"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert "Customer called twice" in response.content.decode()
    assert "rory" in response.content.decode()


# --- executions ------------------------------------------------------------------------------


def test_a_viewer_cannot_cancel_and_a_reviewer_can(viewer, teammate, agent):
    execution = start(agent)
    assert csrf_post(browser(viewer), f"/executions/{execution.pk}/cancel/").status_code == 403
    execution.refresh_from_db()
    assert execution.status == "pending"
    response = csrf_post(browser(teammate), f"/executions/{execution.pk}/cancel/")
    assert response.status_code == 302
    execution.refresh_from_db()
    assert execution.status == "cancelled"


def test_retry_starts_a_new_run_and_opens_it(teammate, agent):
    execution = start(agent)
    lifecycle.transition(execution, "cancelled", type="cancelled")
    response = csrf_post(browser(teammate), f"/executions/{execution.pk}/retry/")
    retried = Execution.objects.exclude(pk=execution.pk).get()
    assert response["Location"] == f"/executions/{retried.pk}/"
    assert retried.retry_of_id == execution.pk


def test_resume_uses_a_form_generated_from_the_waiting_steps_schema(teammate, agent):
    execution = start(agent)
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "minLength": 2}, "count": {"type": "integer"}},
        "required": ["answer"],
    }
    lifecycle.transition(execution, "running", type="start")
    lifecycle.transition(
        execution,
        "awaiting_input",
        type="wait",
        fields={"state": {"waiting": {"path": "main[1]", "schema": schema, "info": {}}}},
    )
    page = browser(teammate)
    body = page.get(f"/executions/{execution.pk}/").content.decode()
    assert 'name="resume-answer"' in body and 'name="resume-count"' in body
    response = csrf_post(
        page, f"/executions/{execution.pk}/resume/", {"resume-answer": "x"}, HTTP_HX_REQUEST="true"
    )
    assert response.status_code == 422
    assert "too short" in response.content.decode()
    response = csrf_post(
        page,
        f"/executions/{execution.pk}/resume/",
        {"resume-answer": "yes", "resume-count": "3"},
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 204
    assert response["HX-Redirect"] == f"/executions/{execution.pk}/"
    execution.refresh_from_db()
    assert execution.status == "running"
    assert execution.state["resume_input"] == {"answer": "yes", "count": 3}


def test_the_run_form_is_generated_from_the_input_schema_and_starts_a_run(teammate, agent):
    page = browser(teammate)
    body = page.get(f"/agents/{agent.pk}/").content.decode()
    assert 'name="run-n"' in body and 'type="number"' in body
    response = csrf_post(page, f"/agents/{agent.pk}/", {"run-n": "abc"})
    assert response.status_code == 422
    assert not Execution.objects.exists()
    response = csrf_post(page, f"/agents/{agent.pk}/", {"run-n": "21"}, HTTP_HX_REQUEST="true")
    execution = Execution.objects.get()
    assert response["HX-Redirect"] == f"/executions/{execution.pk}/"
    assert execution.input == {"n": 21}
    assert execution.created_by_user_id == teammate.user.pk


def test_a_viewer_cannot_start_a_run(viewer, agent):
    page = browser(viewer)
    assert "Viewers can watch runs" in page.get(f"/agents/{agent.pk}/").content.decode()
    assert csrf_post(page, f"/agents/{agent.pk}/", {"run-n": "2"}).status_code == 403
    assert not Execution.objects.exists()


# --- the list: filters, sorting, keyset pages, saved views -----------------------------------


def next_cursor(body: str) -> str | None:
    if 'id="load-more"' not in body:
        return None
    return body.split('id="load-more"')[1].split("cursor=")[1].split("&")[0].split('"')[0]


def test_filters_live_in_the_url_and_pages_are_keyset(viewer, agent):
    runs = [start(agent, n=i) for i in range(55)]
    lifecycle.transition(runs[0], "running", type="start")
    page = browser(viewer)
    body = page.get("/executions/").content.decode()
    assert body.count('<tr id="exec-') == 50
    assert f"exec-{runs[-1].pk}" in body and f"exec-{runs[0].pk}" not in body
    cursor = next_cursor(body)
    more = page.get(f"/executions/?cursor={cursor}&fragment=rows", HTTP_HX_REQUEST="true")
    assert more.content.decode().count('<tr id="exec-') == 5
    running = page.get("/executions/?status=running").content.decode()
    assert running.count('<tr id="exec-') == 1
    bad = page.get("/executions/?status=bogus").content.decode()
    assert "unknown status" in bad


def test_sorting_by_duration_pages_through_every_row_once(viewer, agent):
    runs = [start(agent, n=i) for i in range(60)]
    for i, run in enumerate(runs[:30]):
        Execution.objects.filter(pk=run.pk).update(duration_ms=1000 + (i % 7))
    page = browser(viewer)
    seen = []
    url = "/executions/?ordering=-duration_ms"
    while url:
        body = page.get(url).content.decode()
        seen += [chunk.split('"')[0] for chunk in body.split('<tr id="exec-')[1:]]
        cursor = next_cursor(body)
        url = f"/executions/?ordering=-duration_ms&cursor={cursor}" if cursor else None
    assert len(seen) == 60 and len(set(seen)) == 60


def test_saved_views_are_shared_with_the_workspace(viewer, teammate, outsider):
    csrf_post(browser(viewer), "/executions/views/", {"name": "Failures", "query": "status=failed"})
    assert SavedView.objects.get().created_by == viewer.user
    assert "Failures" in browser(teammate).get("/executions/").content.decode()
    assert "Failures" not in browser(outsider).get("/executions/").content.decode()
    view = SavedView.objects.get()
    # Only its author or an admin removes it.
    assert csrf_post(browser(teammate), f"/executions/views/{view.pk}/delete/").status_code == 403
    csrf_post(browser(viewer), f"/executions/views/{view.pk}/delete/")
    assert not SavedView.objects.exists()


# --- settings --------------------------------------------------------------------------------


def test_an_admin_creates_a_key_shown_once_and_revokes_it(owner):
    page = browser(owner)
    # Post/redirect/get: the secret is on the page the redirect lands on, and only there.
    body = csrf_post(
        page, "/settings/", {"action": "create", "name": "ci", "role": "viewer"}, follow=True
    )
    assert body.redirect_chain == [("/settings/", 302)]
    key = ApiKey.objects.get(name="ci")
    text = body.content.decode()
    assert "shown once" in text and f"{key.prefix}_" in text
    assert key.prefix + "_" in text and ApiKey.hash_secret(
        text.split('id="new-key">')[1].split("<")[0]
    ) == (key.secret_hash)
    assert 'id="new-key"' not in page.get("/settings/").content.decode()
    csrf_post(page, "/settings/", {"action": "revoke", "prefix": key.prefix})
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_a_reviewer_cannot_create_keys_by_forging_the_form(teammate):
    response = csrf_post(browser(teammate), "/settings/", {"action": "create", "name": "x"})
    assert response.status_code == 403
    assert not ApiKey.objects.filter(name="x").exists()


def test_an_admin_manages_members_but_keeps_one_admin(owner, viewer):
    page = browser(owner)
    csrf_post(page, "/settings/members/", {"action": "role", "user_id": viewer.user.pk,
                                           "role": "reviewer"})  # fmt: skip
    assert Membership.objects.get(user=viewer.user).role == "reviewer"
    response = csrf_post(
        page, "/settings/members/", {"action": "role", "user_id": owner.user.pk, "role": "viewer"}
    )
    assert response.status_code == 422 and "at least one admin" in response.content.decode()
    csrf_post(
        page,
        "/settings/members/",
        {"action": "add", "username": "newbie", "password": "long-enough-pw", "role": "viewer"},
    )
    assert Membership.objects.filter(user__username="newbie", role="viewer").exists()
    csrf_post(page, "/settings/members/", {"action": "remove", "user_id": viewer.user.pk})
    assert not Membership.objects.filter(user=viewer.user).exists()


def test_retention_is_validated(owner):
    page = browser(owner)
    response = csrf_post(page, "/settings/retention/", {"retention_days": "0"})
    assert response.status_code == 422
    csrf_post(page, "/settings/retention/", {"retention_days": "90"})
    owner.workspace.refresh_from_db()
    assert owner.workspace.retention_days == 90


def test_workspace_switching_only_to_workspaces_you_belong_to(owner, outsider):
    page = browser(owner)
    response = csrf_post(page, "/workspace/switch/", {"workspace": str(outsider.workspace.pk)})
    assert response.status_code == 403
    from executions import services

    services.membership_set(workspace=outsider.workspace, user=owner.user, role="viewer")
    response = csrf_post(
        page, "/workspace/switch/", {"workspace": str(outsider.workspace.pk), "next": "/agents/"}
    )
    assert response.status_code == 302
    assert "Globex" in page.get("/agents/").content.decode()
