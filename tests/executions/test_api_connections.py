"""API calls served by the API's handler give their database connection back. Its lanes
(executions/api/handler.py) are threads that live as long as the process, so a connection one
of them kept after a call would stay checked out of the pool for good (and, in the tests, keep
the test database "in use" when it is dropped)."""

from __future__ import annotations

import time

import httpx
import pytest
from django.db import connection

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
