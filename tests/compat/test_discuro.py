"""Discuro's retrieve endpoint (seed 003) against a live Steward: `POST
/discuro/v1/executions/retrieve?id=…`. Discuro publishes no Python SDK, so the client is plain
httpx doing what the seed describes: start a run, poll until `ended`, check `passed`, read
`transformation.data`."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone

from executions import services
from executions.engine import retention
from executions.lifecycle import SYSTEM
from executions.models import Execution, ExecutionTombstone
from tests.compat.conftest import ASKS, BROKEN, DOUBLER, NUMBER_SCHEMA, make_agent, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

NOT_FOUND = {"error": "Operation failed - execution_log not found", "meta_data": None}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


@pytest.fixture
def http(asgi_server, owner):
    with httpx.Client(
        base_url=asgi_server.url, headers={"Authorization": f"Bearer {owner.key}"}, timeout=10
    ) as client:
        yield client


def retrieve(http: httpx.Client, execution_id: str, path: str = "/discuro/v1/executions/retrieve"):
    return http.post(path, params={"id": execution_id})


def start(owner, agent, input: dict) -> str:
    execution, _ = services.execution_start(workspace=owner.workspace, agent=agent, input=input)
    return str(execution.pk)


def poll_until_ended(http: httpx.Client, execution_id: str) -> dict:
    return wait_until(
        lambda: (body := retrieve(http, execution_id).json()).get("status") == "ended" and body,
        what="status ended",
    )


def test_a_successful_run_ends_passed_with_its_data_usage_and_times(http, owner):
    agent = make_agent(owner.workspace, "doubler", DOUBLER, schema=NUMBER_SCHEMA)
    execution_id = start(owner, agent, {"n": 21})
    first = retrieve(http, execution_id)
    assert first.status_code == 200
    assert first.json() in (
        {"id": execution_id, "status": "started"},
        poll_until_ended(http, execution_id),
    )

    body = poll_until_ended(http, execution_id)
    assert body["id"] == execution_id and body["passed"] is True
    transformation = body["transformation"]
    assert transformation["data"] == {"n": 42}
    assert transformation["usage"] == {
        "completion_tokens": 0,
        "prompt_tokens": 0,
        "total_tokens": 0,
    }
    assert ISO.match(transformation["start"]) and ISO.match(transformation["end"])
    assert transformation["start"] <= transformation["end"]
    assert "results" not in transformation


def test_a_failed_run_ends_not_passed_with_per_step_results(http, owner):
    agent = make_agent(owner.workspace, "broken", BROKEN)
    execution_id = start(owner, agent, {"n": 1})
    body = poll_until_ended(http, execution_id)
    assert body["status"] == "ended" and body["passed"] is False
    transformation = body["transformation"]
    assert transformation["data"] == {}
    results = transformation["results"]
    assert results["main[0]"]["passed"] is True and results["main[0]"]["error"] is None
    failing = results["main[1]"]
    assert failing["passed"] is False
    assert "the warehouse is closed" in failing["error"]
    assert failing["property"] == {"name": "error"} and failing["layer_results"] is None
    assert ISO.match(failing["start"]) and ISO.match(failing["end"])


def test_a_waiting_run_is_started_and_a_cancelled_one_ended_not_passed(http, owner):
    agent = make_agent(owner.workspace, "asks", ASKS)
    execution_id = start(owner, agent, {})
    wait_until(
        lambda: Execution.objects.get(pk=execution_id).status == "awaiting_input",
        what="awaiting_input",
    )
    assert retrieve(http, execution_id).json() == {"id": execution_id, "status": "started"}
    services.execution_cancel(
        execution=Execution.objects.get(pk=execution_id),
        actor=SYSTEM,
        reason="customer left",
    )
    body = retrieve(http, execution_id).json()
    assert body["status"] == "ended" and body["passed"] is False
    failing = {k: r for k, r in body["transformation"]["results"].items() if not r["passed"]}
    assert list(failing) == ["execution"]
    assert failing["execution"]["error"] == "customer left"


def test_unknown_malformed_foreign_and_expired_ids_all_answer_the_seed_400(
    http, asgi_server, owner, outsider
):
    assert retrieve(http, str(uuid.uuid4())).status_code == 400
    assert retrieve(http, str(uuid.uuid4())).json() == NOT_FOUND
    assert retrieve(http, "10").json() == NOT_FOUND

    theirs = make_agent(outsider.workspace, "theirs", DOUBLER, schema=NUMBER_SCHEMA)
    foreign = start(outsider, theirs, {"n": 1})
    assert retrieve(http, foreign).json() == NOT_FOUND

    agent = make_agent(owner.workspace, "doubler", DOUBLER, schema=NUMBER_SCHEMA)
    old = start(owner, agent, {"n": 2})
    poll_until_ended(http, old)
    owner.workspace.retention_days = 1
    owner.workspace.save(update_fields=["retention_days"])
    Execution.objects.filter(pk=old).update(created_at=timezone.now() - timedelta(days=3))
    retention.purge()
    assert ExecutionTombstone.objects.filter(pk=old).exists()
    expired = retrieve(http, old)
    assert expired.status_code == 400 and expired.json() == NOT_FOUND


def test_the_seed_path_with_a_double_slash_works_and_auth_is_required(http, asgi_server, owner):
    agent = make_agent(owner.workspace, "doubler", DOUBLER, schema=NUMBER_SCHEMA)
    execution_id = start(owner, agent, {"n": 3})
    poll_until_ended(http, execution_id)
    doubled = retrieve(http, execution_id, path="/discuro//v1/executions/retrieve")
    assert doubled.status_code == 200 and doubled.json()["passed"] is True

    anonymous = httpx.post(
        f"{asgi_server.url}/discuro/v1/executions/retrieve", params={"id": execution_id}
    )
    assert anonymous.status_code == 401
    assert set(anonymous.json()) == {"error", "meta_data"}
    assert http.get("/discuro/v1/executions/retrieve", params={"id": execution_id}).status_code == (
        405
    )
    missing_id = http.post("/discuro/v1/executions/retrieve")
    assert missing_id.status_code == 400 and "id" in missing_id.json()["error"]
