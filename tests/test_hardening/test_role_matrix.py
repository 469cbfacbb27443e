"""Who may write what, in one place: every API write and every dashboard POST × {outsider,
viewer, reviewer, admin}.

The tables below are checked against the routes themselves (the native API's OpenAPI document
and the URL resolver), so a new write that is not in a table fails
`test_every_api_write_is_in_the_matrix` / `test_every_dashboard_view_is_in_the_matrix` until
someone decides who may use it. Then each cell is exercised against a fresh workspace:
- a role below `need` gets 403 and nothing changes;
- the outsider (an admin of another workspace) gets 404 for this workspace's objects and
  nothing changes; rows marked outsider="own" act on the outsider's own workspace instead;
- a role at or above `need` gets one of the row's `ok` statuses.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from approvals import notifications
from approvals.models import Approval, ApprovalComment, Webhook, WebhookDelivery
from config.api import api
from executions import services
from executions.models import Agent, AgentVersion, ApiKey, Execution, Membership, Role, SavedView
from tests.conftest import WORKFLOW_CONFIG, Member

pytestmark = pytest.mark.django_db

VIEWER, REVIEWER, ADMIN = Role.VIEWER, Role.REVIEWER, Role.ADMIN
RANK = {VIEWER: 0, REVIEWER: 1, ADMIN: 2}
WHO = ("outsider", "viewer", "reviewer", "admin")
Body = dict[str, Any] | Callable[["World"], dict[str, Any]] | None


@dataclass(frozen=True)
class Write:
    need: str  # the lowest role in the workspace that may do it
    body: Body = None
    outsider: str = "404"  # "404": this workspace's object; "own": acts on its own workspace
    ok: tuple[int, ...] = (200, 201, 202, 204)
    # What a role below `need` gets. 403, but for the API's bulk decision, which reports each
    # item on its own: 200 with every item "forbidden" (and, as for every refusal, no change).
    refused: int = 403


@dataclass(frozen=True)
class Page(Write):
    ok: tuple[int, ...] = (200, 204, 302)


READ_ONLY = Page(need="", ok=(405,))  # a page that answers POST with 405, for everyone
CONFLICT = (200, 202, 409)  # the role check passed; the state of the run decides

# --- the matrix: native API -------------------------------------------------------------------

API: dict[tuple[str, str], Write] = {
    ("POST", "/api/v1/agents"): Write(ADMIN, {"name": "made", "type": "workflow"}, "own"),
    ("PATCH", "/api/v1/agents/{agent_id}"): Write(ADMIN, {"description": "changed"}),
    ("DELETE", "/api/v1/agents/{agent_id}"): Write(ADMIN),
    ("POST", "/api/v1/agents/{agent_id}/versions"): Write(ADMIN, {"config": WORKFLOW_CONFIG}),
    ("PUT", "/api/v1/agents/{agent_id}/versions/{version_id}/promote"): Write(ADMIN),
    ("POST", "/api/v1/agents/{agent_id}/versions/{version_id}/promote"): Write(ADMIN),
    ("POST", "/api/v1/agents/{agent_id}/execute"): Write(REVIEWER, {"input": {"n": 1}}),
    ("POST", "/api/v1/executions"): Write(
        REVIEWER, lambda w: {"agent_id": str(w.agent.pk), "input": {"n": 1}}
    ),
    ("POST", "/api/v1/executions/{execution_id}/cancel"): Write(REVIEWER, {}),
    ("POST", "/api/v1/executions/{execution_id}/resume"): Write(
        REVIEWER, {"input": {}}, ok=CONFLICT
    ),
    ("POST", "/api/v1/executions/{execution_id}/retry"): Write(REVIEWER, ok=CONFLICT),
    ("POST", "/api/v1/executions/{execution_id}/approve"): Write(REVIEWER),
    ("POST", "/api/v1/executions/{execution_id}/deny"): Write(REVIEWER),
    ("POST", "/api/v1/executions/{execution_id}/events"): Write(
        REVIEWER, {"type": "log", "message": "hello"}
    ),
    ("POST", "/api/v1/executions/{execution_id}/approvals"): Write(
        REVIEWER, {"title": "And this?"}, ok=(200, 201, 202, 409)
    ),
    ("POST", "/api/v1/approvals/bulk-decide"): Write(
        REVIEWER, lambda w: {"decision": "approve", "ids": [str(w.approval.pk)]}, "own", refused=200
    ),
    ("POST", "/api/v1/approvals/{approval_id}/decide"): Write(REVIEWER, {"decision": "approve"}),
    ("POST", "/api/v1/approvals/{approval_id}/comments"): Write(REVIEWER, {"body": "why?"}),
    ("POST", "/api/v1/webhooks"): Write(
        ADMIN, {"url": "http://127.0.0.1:9/new", "events": ["*"]}, "own"
    ),
    ("PATCH", "/api/v1/webhooks/{webhook_id}"): Write(ADMIN, {"active": False}),
    ("DELETE", "/api/v1/webhooks/{webhook_id}"): Write(ADMIN),
    ("POST", "/api/v1/webhooks/{webhook_id}/ping"): Write(ADMIN),
    ("POST", "/api/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): Write(ADMIN),
}

# --- the matrix: dashboard (URL name → who may POST) ------------------------------------------

PAGES: dict[str, Page] = {
    "overview": READ_ONLY,
    "execution_list": READ_ONLY,
    "execution_list_changes": READ_ONLY,
    "execution_detail": READ_ONLY,
    "execution_tool_result": READ_ONLY,
    "agent_list": READ_ONLY,
    "approval_inbox": READ_ONLY,
    "approval_detail": READ_ONLY,
    "workspace_switch": Page(VIEWER, lambda w: {"workspace": str(w.workspace.pk)}, outsider="403"),
    "savedview_create": Page(VIEWER, {"name": "mine", "query": "status=failed"}, "own"),
    # Anyone may delete their own saved view; another's (here the admin's) takes an admin.
    "savedview_delete": Page(ADMIN),
    "agent_detail": Page(REVIEWER, {"input": '{"n": 2}'}, ok=(200, 204, 302, 422)),
    "execution_cancel": Page(REVIEWER),
    "execution_retry": Page(REVIEWER),
    "execution_resume": Page(REVIEWER),
    "approval_decide": Page(REVIEWER, {"decision": "approve"}),
    "approval_bulk": Page(
        REVIEWER, lambda w: {"decision": "approve", "ids": [str(w.approval.pk)]}, "own"
    ),
    "approval_comment": Page(REVIEWER, {"body": "why?"}),
    "settings_keys": Page(ADMIN, {"name": "ci", "role": VIEWER}, "own"),
    "settings_members": Page(
        ADMIN,
        {"action": "add", "username": "newbie", "role": VIEWER, "password": "long-enough-pw"},
        "own",
    ),
    "settings_member_unlock": Page(ADMIN),
    "settings_retention": Page(ADMIN, {"retention_days": 7}, "own"),
    "settings_webhooks": Page(
        ADMIN, {"action": "create", "url": "http://127.0.0.1:9/new", "events": ["*"]}, "own"
    ),
}
# Not dashboard writes of a workspace: sign-in/out, health checks, Django's admin, the API faces.
NOT_DASHBOARD = re.compile(
    r"^(\^?api/|julep/|moderately/|discuro/|admin/|healthz|readyz|login/|logout/)"
)


# --- a fresh workspace per cell ---------------------------------------------------------------


@dataclass
class World:
    workspace: Any
    members: dict[str, Member]
    agent: Agent
    version: AgentVersion
    execution: Execution  # an external agent's run, parked on `approval`
    approval: Approval
    webhook: Webhook
    delivery: WebhookDelivery
    view: SavedView
    ids: dict[str, str] = field(default_factory=dict)

    def snapshot(self) -> dict[str, Any]:
        """Everything a refused write could have changed."""
        ws = self.workspace
        return {
            "agents": sorted(Agent.objects.filter(workspace=ws).values_list("name", "description")),
            "current": Agent.objects.filter(pk=self.agent.pk)
            .values_list("current_version", flat=True)
            .first(),
            "versions": AgentVersion.objects.filter(agent__workspace=ws).count(),
            "executions": sorted(
                Execution.objects.filter(workspace=ws).values_list("status", flat=True)
            ),
            "approvals": sorted(
                Approval.objects.filter(workspace=ws).values_list("status", flat=True)
            ),
            "comments": ApprovalComment.objects.filter(approval__workspace=ws).count(),
            "webhooks": sorted(Webhook.objects.filter(workspace=ws).values_list("url", "active")),
            "deliveries": WebhookDelivery.objects.filter(webhook__workspace=ws).count(),
            "views": SavedView.objects.filter(workspace=ws).count(),
            "members": sorted(
                Membership.objects.filter(workspace=ws).values_list("user__username", "role")
            ),
            "keys": ApiKey.objects.filter(workspace=ws).count(),
            "retention": type(ws).objects.get(pk=ws.pk).retention_days,
        }


@pytest.fixture
def world(owner, teammate, viewer, outsider) -> World:
    ws = owner.workspace
    agent = services.agent_create(workspace=ws, name="doubler", type="workflow")
    version = services.agent_version_create(agent=agent, version="1.0", config=WORKFLOW_CONFIG)
    services.agent_version_create(agent=agent, version="1.1", config=WORKFLOW_CONFIG)
    outside = services.agent_create(workspace=ws, name="outside", type="external")
    execution, _ = services.execution_start(workspace=ws, agent=outside, input={})
    asked = owner.post(f"/api/v1/executions/{execution.pk}/approvals", {"title": "Ship it?"})
    assert asked.status_code in (200, 201), asked.content
    approval = Approval.objects.get(pk=asked.json()["data"]["id"])
    webhook = notifications.webhook_create(workspace=ws, url="http://127.0.0.1:9/x", events=["*"])
    delivery = notifications.webhook_ping(webhook=webhook)
    view = services.savedview_create(
        workspace=ws, name="failed", query="status=failed", created_by=owner.user
    )
    members = {"outsider": outsider, "viewer": viewer, "reviewer": teammate, "admin": owner}
    world = World(ws, members, agent, version, execution, approval, webhook, delivery, view)
    world.ids = {
        "agent_id": str(agent.pk),
        "version_id": str(version.pk),
        "execution_id": str(execution.pk),
        "approval_id": str(approval.pk),
        "webhook_id": str(webhook.pk),
        "delivery_id": str(delivery.pk),
        "view_id": str(view.pk),
        "user_id": str(teammate.user.pk),
        "call_id": "call-1",
    }
    return world


def expectation(row: Write, who: str) -> str:
    if who == "outsider":
        return "allowed" if row.outsider == "own" else row.outsider
    return "allowed" if RANK[who] >= RANK[row.need] else str(row.refused)


def body_of(row: Write, world: World) -> dict[str, Any] | None:
    return row.body(world) if callable(row.body) else row.body


def check(reply: Any, row: Write, who: str, world: World, before: dict[str, Any]) -> None:
    expected = expectation(row, who)
    content = reply.content[:300]
    if expected == "allowed":
        assert reply.status_code in row.ok, (who, reply.status_code, content)
        return
    assert reply.status_code == int(expected), (who, reply.status_code, content)
    assert world.snapshot() == before, f"a refused {who} changed something"


# --- the tables cover every route ---------------------------------------------------------------


def api_writes() -> set[tuple[str, str]]:
    paths = api.get_openapi_schema()["paths"]
    return {
        (method.upper(), path)
        for path, operations in paths.items()
        for method in operations
        if method in {"post", "put", "patch", "delete"}
    }


def dashboard_routes() -> dict[str, str]:
    def walk(patterns: list, prefix: str = ""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern), pattern.name

    routes = {}
    for route, name in walk(get_resolver().url_patterns):
        if NOT_DASHBOARD.match(route):
            continue
        assert name, f"dashboard route {route!r} has no name, so the matrix cannot list it"
        routes[name] = route
    return routes


def test_every_api_write_is_in_the_matrix():
    writes = api_writes()
    assert not writes - set(API), f"API writes missing from the role matrix: {writes - set(API)}"
    assert not set(API) - writes, f"rows for routes that no longer exist: {set(API) - writes}"


def test_every_dashboard_view_is_in_the_matrix():
    names = set(dashboard_routes())
    assert not names - set(PAGES), (
        f"dashboard views missing from the role matrix: {names - set(PAGES)}"
    )
    assert not set(PAGES) - names, f"rows for views that no longer exist: {set(PAGES) - names}"


# --- every cell -------------------------------------------------------------------------------


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("route", sorted(API), ids=lambda r: f"{r[0]} {r[1]}")
def test_api_write(route, who, world):
    method, path = route
    row = API[route]
    member = world.members[who]
    url = path.format(**world.ids)
    before = world.snapshot()
    body = body_of(row, world)
    if method == "POST":
        reply = member.post(url, body)
    elif method == "PATCH":
        reply = member.patch(url, body or {})
    elif method == "PUT":
        reply = member.client.put(
            url, "{}", content_type="application/json", HTTP_X_API_KEY=member.key
        )
    else:
        reply = member.delete(url)
    check(reply, row, who, world, before)


@pytest.mark.parametrize("who", WHO)
@pytest.mark.parametrize("name", sorted(PAGES))
def test_dashboard_post(name, who, world):
    row = PAGES[name]
    route = dashboard_routes()[name]
    kwargs = {k: world.ids[k] for k in re.findall(r"<(?:\w+:)?(\w+)>", route)}
    client = Client()
    client.force_login(world.members[who].user)
    before = world.snapshot()
    reply = client.post(reverse(name, kwargs=kwargs), body_of(row, world) or {})
    if row is READ_ONLY:
        assert reply.status_code == 405, (who, reply.status_code)
        assert world.snapshot() == before
        return
    check(reply, row, who, world, before)


def test_the_matrix_members_are_who_they_say(world):
    roles = {who: Membership.objects.get(user=m.user).role for who, m in world.members.items()}
    assert roles == {"outsider": ADMIN, "viewer": VIEWER, "reviewer": REVIEWER, "admin": ADMIN}
    assert world.members["outsider"].workspace != world.workspace
    assert get_user_model().objects.count() == 4
