"""Every dashboard page renders for a member, needs a login, and stays in its workspace."""

from __future__ import annotations

import pytest

from tests.executions.dashboard_helpers import browser, park, start

pytestmark = pytest.mark.django_db


@pytest.fixture
def parked(agent, owner):
    execution = start(agent)
    approval = park(execution)
    return execution, approval


PAGES = [
    "/",
    "/executions/",
    "/approvals/",
    "/approvals/?tab=all",
    "/approvals/?tab=decided",
    "/agents/",
]


@pytest.mark.parametrize("path", PAGES + ["/settings/", "/settings/members/"])
def test_it_sends_anonymous_visitors_to_the_login_page(client, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


@pytest.mark.parametrize("path", PAGES)
def test_every_page_renders_for_a_viewer(viewer, parked, path):
    response = browser(viewer).get(path)
    assert response.status_code == 200, response.content[:500]
    assert b"Steward" in response.content


def test_the_detail_pages_render_with_their_parts(viewer, parked, agent):
    execution, approval = parked
    page = browser(viewer)
    body = page.get(f"/executions/{execution.pk}/").content.decode()
    assert "Awaiting approval" in body
    assert "Refund order A-1001" in body
    assert 'id="exec-timeline"' in body
    assert f"/ws/live/?ws={execution.workspace_id}" in body.replace("&amp;", "&")
    body = page.get(f"/approvals/{approval.pk}/").content.decode()
    assert "A-1001" in body and "refund" in body
    body = page.get(f"/agents/{agent.pk}/").content.decode()
    assert "Definition" in body and "evaluate" in body


def test_an_outsider_gets_404_for_another_workspaces_objects(outsider, parked, agent):
    execution, approval = parked
    page = browser(outsider)
    assert page.get(f"/executions/{execution.pk}/").status_code == 404
    assert page.get(f"/approvals/{approval.pk}/").status_code == 404
    assert page.get(f"/agents/{agent.pk}/").status_code == 404
    assert "doubler" not in page.get("/executions/").content.decode()


@pytest.mark.parametrize(
    "path", ["/settings/", "/settings/members/", "/settings/webhooks/", "/settings/retention/"]
)
def test_settings_are_for_admins_only(viewer, teammate, owner, path):
    assert browser(viewer).get(path).status_code == 403
    assert browser(teammate).get(path).status_code == 403
    assert browser(owner).get(path).status_code == 200


def test_a_user_without_workspace_is_told_what_to_do(db, django_user_model):
    from django.test import Client

    user = django_user_model.objects.create_user(username="lonely", password="pw-lonely")
    client = Client()
    client.force_login(user)
    response = client.get("/executions/")
    assert response.status_code == 403
    assert b"not in a workspace" in response.content
