"""The API's ASGI handler (executions/api/handler.py) over a live server: API calls skip the
dashboard's middleware but keep the API's contract (security headers, error bodies, the body
size limit, key auth), async views still work, and the dashboard keeps its middleware."""

from __future__ import annotations

import httpx

from executions import services
from executions.api.handler import DASHBOARD_ONLY, api_middleware

HEADERS = ("Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options")


def test_the_api_chain_is_the_projects_minus_the_dashboards(settings):
    chain = api_middleware()
    assert "executions.ratelimit.RateLimitMiddleware" in chain
    assert "executions.middleware.WorkspaceMiddleware" in chain
    assert "django.middleware.security.SecurityMiddleware" in chain
    assert not DASHBOARD_ONLY & set(chain)
    assert chain == [m for m in settings.MIDDLEWARE if m in chain]  # same order


def test_a_sync_read_through_the_handler_keeps_the_contract(asgi_server, owner, agent):
    execution, _ = services.execution_start(workspace=owner.workspace, agent=agent, input={"n": 2})
    with httpx.Client(base_url=asgi_server.url, headers={"X-API-Key": owner.key}) as client:
        reply = client.get(f"/api/v1/executions/{execution.pk}")
        assert reply.status_code == 200
        assert reply.json()["data"]["id"] == str(execution.pk)
        assert reply.json()["data"]["agent_name"] == "doubler"
        for header in HEADERS:
            assert header in reply.headers, header
        assert "set-cookie" not in reply.headers  # no session touched

        missing = client.get("/api/v1/executions/01a2287a-81c7-75a6-b24d-849799f7e5ef")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"

        julep = client.get(
            f"/julep/executions/{execution.pk}", headers={"Authorization": f"Bearer {owner.key}"}
        )
        assert julep.status_code == 200 and julep.json()["id"] == str(execution.pk)

    anonymous = httpx.get(f"{asgi_server.url}/api/v1/executions/{execution.pk}")
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthorized"


def test_writes_and_async_views_through_the_handler(asgi_server, owner, agent):
    with httpx.Client(base_url=asgi_server.url, headers={"X-API-Key": owner.key}) as client:
        created = client.post(f"/api/v1/agents/{agent.pk}/execute", json={"input": {"n": 3}})
        assert created.status_code == 201, created.text
        execution_id = created.json()["data"]["id"]
        replay = client.post(
            "/api/v1/executions",
            json={"agent_id": str(agent.pk), "input": {"n": 4}},
            headers={"Idempotency-Key": "once"},
        )
        again = client.post(
            "/api/v1/executions",
            json={"agent_id": str(agent.pk), "input": {"n": 4}},
            headers={"Idempotency-Key": "once"},
        )
        assert (replay.status_code, again.status_code) == (201, 200)
        assert replay.json()["data"]["id"] == again.json()["data"]["id"]

        listed = client.get("/api/v1/executions", params={"limit": 20})
        assert listed.status_code == 200
        assert execution_id in {row["id"] for row in listed.json()["data"]}

        bad = client.post(
            f"/api/v1/agents/{agent.pk}/execute",
            content=b"{not json",
            headers={"Content-Type": "application/json"},
        )
        assert bad.status_code == 400 and bad.json()["code"] == "malformed_json"

        cancelled = client.post(f"/api/v1/executions/{execution_id}/cancel")
        assert cancelled.status_code in (200, 409), cancelled.text


def test_an_oversized_body_is_a_413_before_anything_reads_it(asgi_server, owner, agent, settings):
    body = b'{"input": {"pad": "' + b"x" * (settings.MAX_REQUEST_BODY_BYTES + 10) + b'"}}'
    reply = httpx.post(
        f"{asgi_server.url}/api/v1/executions/00000000-0000-0000-0000-000000000000/cancel",
        content=body,
        headers={"X-API-Key": owner.key, "Content-Type": "application/json"},
    )
    assert reply.status_code == 413 and reply.json()["code"] == "payload_too_large"


def test_the_dashboard_and_the_docs_keep_the_full_middleware(asgi_server):
    login = httpx.get(f"{asgi_server.url}/login/")
    assert login.status_code == 200
    assert "csrftoken" in login.headers.get("set-cookie", "")  # CSRF middleware ran
    docs = httpx.get(f"{asgi_server.url}/api/v1/docs")
    assert docs.status_code == 200 and "Content-Security-Policy" in docs.headers


def test_a_chunked_body_over_the_limit_is_a_413_too(asgi_server, owner, agent, settings):
    def chunks():
        for _ in range(settings.MAX_REQUEST_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536

    for path in (f"/api/v1/agents/{agent.pk}/execute", "/api/v1/approvals"):  # async, sync
        reply = httpx.post(
            f"{asgi_server.url}{path}",
            content=chunks(),
            headers={"X-API-Key": owner.key, "Content-Type": "application/json"},
        )
        assert reply.status_code == 413 and reply.json()["code"] == "payload_too_large"
