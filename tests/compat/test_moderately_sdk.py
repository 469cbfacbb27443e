"""The real `moderatelyai-sdk` 0.2.7 against a live Steward at /moderately (seed 001's flow)."""

from __future__ import annotations

import uuid

import pytest
from moderatelyai_sdk import AsyncModeratelyAI, ModeratelyAI
from moderatelyai_sdk.exceptions import APIError, AuthenticationError, ValidationError

from executions.models import Execution
from tests.compat.conftest import ASKS, BROKEN, DOUBLER, NUMBER_SCHEMA, make_agent, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def base_url(asgi_server) -> str:
    return f"{asgi_server.url}/moderately"


@pytest.fixture
def client(base_url, owner) -> ModeratelyAI:
    return ModeratelyAI(team_id=str(owner.workspace.pk), api_key=owner.key, base_url=base_url)


@pytest.fixture
def doubler(owner):
    return make_agent(owner.workspace, "doubler", DOUBLER, schema=NUMBER_SCHEMA)


@pytest.fixture
def asks(owner):
    return make_agent(owner.workspace, "asks", ASKS)


def test_create_then_wait_for_completion_returns_the_output(client, doubler):
    created = client.agent_executions.create(agent_id=str(doubler.pk), input_data={"n": 4})
    assert created["agentExecutionId"] == created["id"]
    assert created["agentId"] == str(doubler.pk)
    assert created["agentInput"] == {"n": 4}
    assert created["agentInputSchema"] == NUMBER_SCHEMA
    assert created["status"] in {"pending", "running", "completed"}

    done = client.agent_executions.wait_for_completion(created["id"], timeout=20, poll_interval=0.1)
    assert done["status"] == "completed"
    assert done["agentOutput"] == {"n": 8}
    assert done["completedAt"] and done["startedAt"] and done["failedAt"] is None
    assert client.agent_executions.retrieve(created["id"])["status"] == "completed"


def test_an_agent_can_be_named_instead_of_its_id(client, doubler):
    created = client.agent_executions.create(agent_id="doubler", input_data={"n": 1})
    assert created["agentId"] == str(doubler.pk)


def test_a_failing_run_ends_failed_with_its_error(client, owner):
    broken = make_agent(owner.workspace, "broken", BROKEN)
    created = client.agent_executions.create(agent_id=str(broken.pk), input_data={"n": 1})
    done = client.agent_executions.wait_for_completion(created["id"], timeout=20, poll_interval=0.1)
    assert done["status"] == "failed"
    assert "warehouse is closed" in done["error"]
    assert done["failedAt"] and done["completedAt"] is None


def test_list_filters_orders_and_paginates(client, doubler, asks):
    ids = [
        client.agent_executions.create(agent_id=str(doubler.pk), input_data={"n": n})["id"]
        for n in range(3)
    ]
    for execution_id in ids:
        client.agent_executions.wait_for_completion(execution_id, timeout=20, poll_interval=0.1)
    waiting = client.agent_executions.create(agent_id=str(asks.pk), input_data={})["id"]
    wait_until(
        lambda: client.agent_executions.retrieve(waiting)["status"] == "paused", what="paused"
    )

    everything = client.agent_executions.list()
    assert everything["pagination"] == {
        "page": 1,
        "page_size": 10,
        "total_items": 4,
        "total_pages": 1,
        "has_next_page": False,
        "has_previous_page": False,
    }
    assert [e["id"] for e in everything["items"]][0] == waiting, "newest first by default"

    mine = client.agent_executions.list(agent_id=str(doubler.pk), order_direction="asc")
    assert [e["id"] for e in mine["items"]] == ids
    assert [e["id"] for e in client.agent_executions.list(status="paused")["items"]] == [waiting]
    assert len(client.agent_executions.list(status="completed")["items"]) == 3

    page = client.agent_executions.list(
        agent_id=str(doubler.pk),
        page=2,
        page_size=2,
        order_by="created_at",
        order_direction="asc",
    )
    assert [e["id"] for e in page["items"]] == ids[2:]
    assert page["pagination"]["has_previous_page"] and not page["pagination"]["has_next_page"]
    assert page["pagination"]["total_pages"] == 2

    by_update = client.agent_executions.list(order_by="updated_at", order_direction="desc")
    assert len(by_update["items"]) == 4

    with pytest.raises(ValidationError) as bad:
        client.agent_executions.list(status="exploded")
    assert bad.value.validation_details[0]["field"] == "status"
    assert client.agent_executions.list(agent_id=str(uuid.uuid4()))["items"] == []


def test_cancel_works_once_then_conflicts(client, asks):
    created = client.agent_executions.create(agent_id=str(asks.pk), input_data={})
    wait_until(
        lambda: client.agent_executions.retrieve(created["id"])["status"] == "paused",
        what="paused",
    )
    cancelled = client.agent_executions.cancel(created["id"])
    assert cancelled["status"] == "cancelled" and cancelled["cancelledAt"]
    assert Execution.objects.get(pk=created["id"]).status == "cancelled"
    with pytest.raises(APIError) as again:
        client.agent_executions.cancel(created["id"])
    assert again.value.status_code == 409
    assert "cancelled" in again.value.message
    done = client.agent_executions.wait_for_completion(created["id"], timeout=5, poll_interval=0.1)
    assert done["status"] == "cancelled"


async def test_the_async_client_cancels_with_patch(base_url, owner, asks):
    client = AsyncModeratelyAI(team_id=owner.workspace.slug, api_key=owner.key, base_url=base_url)
    created = await client.agent_executions.create(agent_id=str(asks.pk), input_data={})
    assert created["teamId"] == str(owner.workspace.pk), "the workspace slug names the team too"
    cancelled = await client.agent_executions.cancel(created["id"])
    assert cancelled["status"] == "cancelled"
    with pytest.raises(APIError) as again:
        await client.agent_executions.cancel(created["id"])
    assert again.value.status_code == 409
    with pytest.raises(APIError) as gone:
        await client.agent_executions.delete(created["id"])
    assert gone.value.status_code == 405
    await client.close()


def test_bad_input_unknown_ids_and_fields_are_reported(client, doubler):
    with pytest.raises(ValidationError) as bad:
        client.agent_executions.create(agent_id=str(doubler.pk), input_data={"n": "four"})
    assert bad.value.validation_details == [
        {"field": "input.n", "message": "'four' is not of type 'integer'"}
    ]
    with pytest.raises(ValidationError) as unknown_field:
        client.agent_executions.create(agent_id=str(doubler.pk), priority="high")
    assert unknown_field.value.validation_details[0]["field"] == "priority"
    with pytest.raises(APIError) as no_agent:
        client.agent_executions.create(agent_id="nobody", input_data={})
    assert no_agent.value.status_code == 404
    with pytest.raises(APIError) as missing:
        client.agent_executions.retrieve(str(uuid.uuid4()))
    assert missing.value.status_code == 404 and "not found" in missing.value.message
    assert not Execution.objects.exists()


def test_teams_keys_and_roles_are_enforced(base_url, client, owner, outsider, viewer, doubler):
    created = client.agent_executions.create(agent_id=str(doubler.pk), input_data={"n": 1})
    other_team = ModeratelyAI(team_id=str(uuid.uuid4()), api_key=owner.key, base_url=base_url)
    with pytest.raises(APIError) as wrong_team:
        other_team.agent_executions.retrieve(created["id"])
    assert wrong_team.value.status_code == 404
    assert other_team.agent_executions.list()["items"] == []

    stranger = ModeratelyAI(
        team_id=str(outsider.workspace.pk), api_key=outsider.key, base_url=base_url
    )
    with pytest.raises(APIError) as hidden:
        stranger.agent_executions.retrieve(created["id"])
    assert hidden.value.status_code == 404
    assert stranger.agent_executions.list()["items"] == []

    watcher = ModeratelyAI(team_id=str(owner.workspace.pk), api_key=viewer.key, base_url=base_url)
    assert watcher.agent_executions.retrieve(created["id"])["id"] == created["id"]
    with pytest.raises(AuthenticationError):
        watcher.agent_executions.cancel(created["id"])

    nobody = ModeratelyAI(team_id="t", api_key="stw_bad_key", base_url=base_url, max_retries=0)
    with pytest.raises(AuthenticationError):
        nobody.agent_executions.list()
