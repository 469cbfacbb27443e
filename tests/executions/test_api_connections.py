"""API calls served by the API's handler give their database connection back. Its lanes
(executions/api/handler.py) are threads that live as long as the process, so a connection one
of them kept after a call would stay checked out of the pool for good (and, in the tests, keep
the test database "in use" when it is dropped)."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from django.db import connection

from executions import services
from executions.models import ApiKey

pytestmark = pytest.mark.skipif(
    not connection.settings_dict.get("OPTIONS", {}).get("pool"), reason="PostgreSQL's pool only"
)


def checked_out() -> int:
    stats = connection.pool.get_stats()
    return stats["pool_size"] - stats["pool_available"]


def test_api_calls_on_the_lanes_leave_no_connection_checked_out(asgi_server, owner, agent):
    ApiKey.objects.update(last_used_at=None)  # the first call of a key writes last_used_at
    before = checked_out()
    with httpx.Client(base_url=asgi_server.url, headers={"X-API-Key": owner.key}) as client:
        for _ in range(3):  # more calls than one lane: the lanes are reused
            assert client.get("/api/v1/agents").status_code == 200  # a sync view
            created = client.post(f"/api/v1/agents/{agent.pk}/execute", json={"input": {"n": 2}})
            assert created.status_code == 201, created.text
            execution_id = created.json()["data"]["id"]
            assert client.get(f"/api/v1/executions/{execution_id}").status_code == 200
            assert client.get(f"/julep/executions/{execution_id}").status_code == 200
    assert ApiKey.objects.filter(last_used_at__isnull=False).exists()  # the key's write ran
    # A response's close (which gives the connection back) may end just after its body is sent.
    deadline = time.monotonic() + 5
    while checked_out() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checked_out() == before


def test_a_long_poll_holds_no_connection_while_it_waits(asgi_server, owner):
    """`wait` reads every so often for up to its timeout; between reads it holds no pooled
    connection, so waiting programs cannot take the whole pool from everyone else."""
    outside = services.agent_create(workspace=owner.workspace, name="outside", type="external")
    headers = {"X-API-Key": owner.key}
    with httpx.Client(base_url=asgi_server.url, headers=headers, timeout=20) as client:
        created = client.post(f"/api/v1/agents/{outside.pk}/execute", json={"input": {}})
        assert created.status_code == 201, created.text
        execution_id = created.json()["data"]["id"]  # an external run: never settles here
        approval = client.post(
            f"/api/v1/executions/{execution_id}/approvals", json={"title": "Ship it?"}
        )
        assert approval.status_code == 201, approval.text
        approval_id = approval.json()["data"]["id"]
    time.sleep(0.3)  # the calls above have given theirs back
    before = checked_out()
    replies: dict[str, int] = {}

    def wait(path: str) -> None:
        with httpx.Client(base_url=asgi_server.url, headers=headers, timeout=20) as client:
            replies[path] = client.get(path).status_code

    paths = [
        f"/api/v1/executions/{execution_id}/wait?timeout=2.5",
        f"/api/v1/approvals/{approval_id}/wait?timeout=2.5",
    ]
    waiters = [threading.Thread(target=wait, args=(path,)) for path in paths for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    time.sleep(1.2)  # six long polls in their waits, each having read several times
    assert checked_out() == before
    for waiter in waiters:
        waiter.join(10)
    assert replies == dict.fromkeys(paths, 200)
