"""/api/v1/agents: it works, it validates, it refuses other workspaces and viewers."""

from __future__ import annotations

from executions import lifecycle, services
from executions.models import Agent, AgentVersion, ApiKey
from tests.conftest import NUMBER_SCHEMA, WORKFLOW_CONFIG


def test_it_creates_and_lists_agents(owner):
    r = owner.post("/api/v1/agents", {"name": "support", "type": "agent", "description": "d"})
    assert r.status_code == 201, r.content
    body = r.json()["data"]
    assert body["name"] == "support" and body["status"] == "draft"
    r = owner.get("/api/v1/agents", type="agent", page=1, limit=10)
    listing = r.json()
    assert [a["name"] for a in listing["data"]] == ["support"]
    assert listing["meta"] == {"page": 1, "limit": 10, "total": 1, "pages": 1}


def test_it_filters_agents_by_name_and_type(owner, agent):
    owner.post("/api/v1/agents", {"name": "helper", "type": "agent"})
    assert [a["name"] for a in owner.get("/api/v1/agents", name="doub").json()["data"]] == [
        "doubler"
    ]
    assert [a["name"] for a in owner.get("/api/v1/agents", type="agent").json()["data"]] == [
        "helper"
    ]


def test_it_validates_a_new_agent(owner):
    r = owner.post("/api/v1/agents", {"name": "", "type": "robot"})
    assert r.status_code == 422
    fields = {d["field"] for d in r.json()["details"]}
    assert fields == {"name", "type"}
    assert Agent.objects.count() == 0


def test_it_refuses_a_duplicate_name_with_409(owner, agent):
    r = owner.post("/api/v1/agents", {"name": "doubler", "type": "workflow"})
    assert r.status_code == 409
    assert r.json()["code"] == "conflict"


def test_it_refuses_a_viewer_key_for_writes(viewer, agent):
    assert viewer.get("/api/v1/agents").status_code == 200
    r = viewer.post("/api/v1/agents", {"name": "x", "type": "agent"})
    assert r.status_code == 403
    assert "viewer" in r.json()["error"]
    assert viewer.delete(f"/api/v1/agents/{agent.pk}").status_code == 403


def test_it_answers_404_for_another_workspaces_agent(outsider, agent):
    assert outsider.get(f"/api/v1/agents/{agent.pk}").status_code == 404
    assert outsider.patch(f"/api/v1/agents/{agent.pk}", {"description": "x"}).status_code == 404
    assert outsider.delete(f"/api/v1/agents/{agent.pk}").status_code == 404
    assert outsider.get("/api/v1/agents").json()["data"] == []


def test_it_updates_an_agent(owner, agent):
    r = owner.patch(f"/api/v1/agents/{agent.pk}", {"description": "doubles numbers"})
    assert r.status_code == 200
    assert r.json()["data"]["description"] == "doubles numbers"
    r = owner.patch(f"/api/v1/agents/{agent.pk}", {"type": "agent"})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "type"


def test_it_refuses_to_delete_an_agent_with_unfinished_executions(owner, agent):
    execution, _ = services.execution_start(workspace=owner.workspace, agent=agent, input={"n": 1})
    r = owner.delete(f"/api/v1/agents/{agent.pk}")
    assert r.status_code == 409
    assert r.json()["details"] == {"unfinished_executions": 1}
    services.execution_cancel(execution=execution, actor=lifecycle.SYSTEM)
    assert owner.delete(f"/api/v1/agents/{agent.pk}").status_code == 204
    assert owner.get(f"/api/v1/agents/{agent.pk}").status_code == 404


def test_it_creates_lists_and_promotes_versions(owner, agent):
    r = owner.post(
        f"/api/v1/agents/{agent.pk}/versions",
        {
            "version": "2.0",
            "config": WORKFLOW_CONFIG,
            "input_schema": NUMBER_SCHEMA,
            "message": "second",
            "set_current": False,
        },
    )
    assert r.status_code == 201, r.content
    v2 = r.json()["data"]
    assert v2["is_current"] is False and v2["number"] == 2
    versions = owner.get(f"/api/v1/agents/{agent.pk}/versions").json()["data"]
    assert [v["version"] for v in versions] == ["2.0", "1.0"]
    r = owner.client.put(
        f"/api/v1/agents/{agent.pk}/versions/{v2['id']}/promote",
        "{}",
        content_type="application/json",
        HTTP_X_API_KEY=owner.key,
    )
    assert r.status_code == 200
    assert r.json()["data"]["current_version"]["version"] == "2.0"


def test_it_refuses_a_bad_definition_naming_the_field_and_step(owner, agent):
    r = owner.post(
        f"/api/v1/agents/{agent.pk}/versions",
        {"version": "bad", "config": {"main": [{"evaluate": {"x": "$ 1 +"}}, {"tool": 3}]}},
    )
    assert r.status_code == 422
    fields = [d["field"] for d in r.json()["details"]]
    assert "config.main[0].evaluate.x" in fields
    assert "config.main[1].tool" in fields
    assert not AgentVersion.objects.filter(version="bad").exists()


def test_it_refuses_a_forbidden_expression_when_the_version_is_created(owner, agent):
    r = owner.post(
        f"/api/v1/agents/{agent.pk}/versions",
        {"version": "evil", "config": {"main": [{"evaluate": {"x": "$ inputs.__class__"}}]}},
    )
    assert r.status_code == 422
    assert "private attribute" in r.json()["error"]


def test_it_refuses_an_invalid_input_schema(owner, agent):
    r = owner.post(
        f"/api/v1/agents/{agent.pk}/versions",
        {"version": "s", "config": WORKFLOW_CONFIG, "input_schema": {"type": "banana"}},
    )
    assert r.status_code == 422
    assert r.json()["details"][0]["field"].startswith("input_schema")


def test_authentication_errors_are_clear(client, owner):
    r = client.get("/api/v1/agents")
    assert r.status_code == 401 and "missing API key" in r.json()["error"]
    r = client.get("/api/v1/agents", HTTP_X_API_KEY="stw_nope_nothing")
    assert r.status_code == 401 and r.json()["error"] == "invalid API key"
    r = client.get("/api/v1/agents", HTTP_AUTHORIZATION=f"Bearer {owner.key}")
    assert r.status_code == 200
    key = ApiKey.objects.get(name="olivia")
    services.apikey_revoke(workspace=None, prefix=key.prefix)
    r = client.get("/api/v1/agents", HTTP_X_API_KEY=owner.key)
    assert r.status_code == 401 and "revoked" in r.json()["error"]


def test_last_used_is_kept_without_a_write_on_every_request(owner, django_assert_num_queries):
    owner.get("/api/v1/agents")
    key = ApiKey.objects.get(name="olivia")
    assert key.last_used_at is not None
    first = key.last_used_at
    owner.get("/api/v1/agents")
    key.refresh_from_db()
    assert key.last_used_at == first
