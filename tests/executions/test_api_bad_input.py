"""Bad input answers 400/422 in the API's error body naming the field, with nothing written,
on SQLite and PostgreSQL alike (PostgreSQL refuses NUL in text and jsonb, ranges beyond bigint,
NaN, and non-UUIDs compared with uuid columns; SQLite is laxer, so the API checks first)."""

from __future__ import annotations

import json

import pytest

from approvals.models import Approval, ApprovalComment, Webhook
from executions import services
from executions.models import Agent, AgentVersion, Execution

NUL = "a\x00b"
SURROGATE = "sur\ud800x"


@pytest.fixture
def external(owner):
    return services.agent_create(workspace=owner.workspace, name="outside", type="external")


def counts() -> tuple[int, ...]:
    return (
        Agent.objects.count(),
        AgentVersion.objects.count(),
        Execution.objects.count(),
        Approval.objects.count(),
        ApprovalComment.objects.count(),
        Webhook.objects.count(),
    )


def assert_refused(response, field: str) -> None:
    assert response.status_code in (400, 422), response.content
    body = response.json()
    assert body["code"] in {"validation_error", "bad_request", "malformed_json"}, body
    named = {d["field"] for d in body.get("details") or [] if isinstance(d, dict)}
    assert field in named or field in body["error"], body


@pytest.mark.parametrize(
    "params, field",
    [
        ({"page": "99999999999999999999"}, "page"),
        ({"page": "-1"}, "page"),
        ({"limit": "99999999999999999999"}, "limit"),
        ({"page_size": "abc"}, "page_size"),
        ({"cost_above": "NaN"}, "cost_above"),
        ({"cost_above": "Infinity"}, "cost_above"),
        ({"cost_above": "-inf"}, "cost_above"),
        ({"cost_above": "1e400"}, "cost_above"),
        ({"parent_id": "x"}, "parent_id"),
        ({"agent_id": "x"}, "agent_id"),
        ({"q": "\x00"}, "q"),
        ({"session_id": NUL}, "session_id"),
        ({"metadata": f"k={NUL}"}, "metadata"),
        ({"metadata.k": NUL}, "metadata.k"),
        ({"status": NUL}, "status"),
        ({"created_after": NUL}, "created_after"),
        ({"ordering": NUL}, "ordering"),
        ({"cursor": NUL}, "cursor"),
    ],
)
def test_bad_list_filters_are_refused(owner, params, field):
    assert_refused(owner.get("/api/v1/executions", **params), field)


@pytest.mark.parametrize(
    "path, params, field",
    [
        ("/api/v1/agents", {"name": NUL}, "name"),
        ("/api/v1/agents", {"page": "99999999999999999999"}, "page"),
        ("/api/v1/approvals", {"agent_id": "x"}, "agent_id"),
        ("/api/v1/approvals", {"status": NUL}, "status"),
        ("/api/v1/approvals", {"limit": "1e3"}, "limit"),
        ("/api/v1/stats", {"created_after": NUL}, "created_after"),
        ("/api/v1/executions/approval-inbox", {"page": "99999999999999999999"}, "page"),
    ],
)
def test_bad_query_parameters_elsewhere_are_refused(owner, path, params, field):
    assert_refused(owner.get(path, **params), field)


def test_a_nul_in_a_path_id_is_refused(owner):
    assert_refused(owner.get("/api/v1/executions/a%00b"), "execution_id")
    assert_refused(owner.get("/api/v1/agents/a%00b"), "agent_id")
    assert_refused(owner.post("/api/v1/agents/a%00b/execute", {}), "agent_id")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"name": NUL}, "name"),
        ({"name": SURROGATE}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "ok", "description": NUL}, "description"),
        ({"name": "ok", "metadata": {NUL: 1}}, "metadata"),
        ({"name": "ok", "metadata": {"k": NUL}}, "metadata"),
        ({"name": "ok", "metadata": {"k": [SURROGATE]}}, "metadata"),
        ({"name": "ok", "type": NUL}, "type"),
    ],
)
def test_bad_agents_are_refused_and_nothing_is_written(owner, body, field):
    before = counts()
    assert_refused(owner.post("/api/v1/agents", body), field)
    assert counts() == before


def test_bad_agent_updates_are_refused(owner, agent):
    for body, field in [({"name": NUL}, "name"), ({"metadata": {"k": NUL}}, "metadata")]:
        assert_refused(owner.patch(f"/api/v1/agents/{agent.pk}", body), field)
    agent.refresh_from_db()
    assert agent.name == "doubler" and agent.metadata == {}


@pytest.mark.parametrize(
    "body, field",
    [
        ({"version": NUL, "config": {}}, "version"),
        ({"version": "v" * 65, "config": {}}, "version"),
        ({"config": {"main": [{"evaluate": {"x": NUL}}]}}, "config"),
        ({"config": {NUL: 1}}, "config"),
        ({"message": SURROGATE}, "message"),
    ],
)
def test_bad_versions_are_refused(owner, agent, body, field):
    before = counts()
    assert_refused(owner.post(f"/api/v1/agents/{agent.pk}/versions", body), field)
    assert counts() == before


@pytest.mark.parametrize(
    "body, field",
    [
        ({"input": {"text": NUL}}, "input"),
        ({"input": {NUL: "x"}}, "input"),
        ({"input": [SURROGATE]}, "input"),
        ({"input": NUL}, "input"),
        ({"metadata": {NUL: "x"}}, "metadata"),
        ({"metadata": {"k": NUL}}, "metadata"),
        ({"metadata": {"k": {"deep": [SURROGATE]}}}, "metadata"),
        ({"session_id": NUL}, "session_id"),
        ({"session_id": "s" * 201}, "session_id"),
        ({"input": {"n": 2**80}}, "input"),
    ],
)
def test_bad_executions_are_refused_and_nothing_is_written(owner, external, body, field):
    before = counts()
    assert_refused(owner.post(f"/api/v1/agents/{external.pk}/execute", body), field)
    assert_refused(owner.post("/api/v1/executions", {"agent_id": str(external.pk), **body}), field)
    assert counts() == before


def test_nan_and_infinity_in_a_json_body_are_refused(owner, external):
    before = counts()
    for literal in ("NaN", "Infinity", "-Infinity"):
        r = owner.client.post(
            f"/api/v1/agents/{external.pk}/execute",
            '{"input": {"x": ' + literal + "}}",
            content_type="application/json",
            HTTP_X_API_KEY=owner.key,
        )
        assert_refused(r, "input")
    assert counts() == before


def test_a_body_nested_too_deeply_is_a_400(owner, external):
    r = owner.client.post(
        f"/api/v1/agents/{external.pk}/execute",
        '{"input": ' + "[" * 100_000 + "]" * 100_000 + "}",
        content_type="application/json",
        HTTP_X_API_KEY=owner.key,
    )
    assert r.status_code in (400, 413, 422), r.content
    assert Execution.objects.count() == 0


def test_a_long_or_nul_idempotency_key_is_refused(owner, external):
    path = f"/api/v1/agents/{external.pk}/execute"
    assert_refused(
        owner.post(path, {"input": {}}, **{"Idempotency-Key": "k" * 10_000}), "Idempotency-Key"
    )
    assert_refused(owner.post(path, {"input": {}}, **{"Idempotency-Key": NUL}), "Idempotency-Key")
    assert Execution.objects.count() == 0
    ok = owner.post(path, {"input": {}}, **{"Idempotency-Key": "k" * 200})
    assert ok.status_code == 201


def test_bad_optional_bodies_are_refused(owner, external):
    execution, _ = services.execution_start(workspace=owner.workspace, agent=external, input={})
    base = f"/api/v1/executions/{execution.pk}"
    assert_refused(owner.post(f"{base}/cancel", {"reason": NUL}), "reason")
    assert_refused(owner.post(f"{base}/cancel", {"reason": 5}), "reason")
    assert_refused(owner.post(f"{base}/approve", {"reason": SURROGATE}), "reason")
    assert_refused(owner.post(f"{base}/events", {"type": "log", "message": NUL}), "message")
    assert_refused(owner.post(f"{base}/approvals", {"title": "t" * 301}), "title")
    assert_refused(owner.post(f"{base}/approvals", {"title": NUL}), "title")
    execution.refresh_from_db()
    assert execution.status == "pending" and Approval.objects.count() == 0


def test_bad_approval_and_webhook_input_is_refused(owner):
    before = counts()
    assert_refused(owner.post("/api/v1/webhooks", {"url": f"http://x/{NUL}"}), "url")
    assert_refused(owner.post("/api/v1/webhooks", {"url": "http://x/" + "a" * 1000}), "url")
    assert_refused(
        owner.post("/api/v1/webhooks", {"url": "http://x/", "description": "d" * 201}),
        "description",
    )
    assert_refused(owner.post("/api/v1/approvals/bulk-decide", {"decision": NUL}), "decision")
    r = owner.post("/api/v1/approvals/bulk-decide", {"decision": "approve", "ids": [NUL]})
    assert_refused(r, "ids")
    assert counts() == before


def test_malformed_bodies_are_400s_not_500s(owner, external):
    path = f"/api/v1/agents/{external.pk}/execute"
    for raw in ('{"input": "\\ud800"', "[1, 2]", '"text"', "\x00"):
        r = owner.client.post(path, raw, content_type="application/json", HTTP_X_API_KEY=owner.key)
        assert r.status_code in (400, 422), (raw, r.content)
        assert json.loads(r.content)["code"]
    assert Execution.objects.count() == 0


def test_an_optional_body_that_is_not_utf8_is_a_400(owner, external):
    execution, _ = services.execution_start(workspace=owner.workspace, agent=external, input={})
    r = owner.client.post(
        f"/api/v1/executions/{execution.pk}/deny",
        b"\xff\x13\xfeZ\xff",
        content_type="application/json",
        HTTP_X_API_KEY=owner.key,
    )
    assert r.status_code == 400 and r.json()["code"] == "malformed_json"
