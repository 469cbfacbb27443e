"""Bad input to the compat faces: text no database can store (NUL, lone surrogates), strings
over a column's length, integers out of range, ids that are not UUIDs. Each answers the face's
own 4xx body naming the field, and nothing is written. Runs on SQLite and PostgreSQL alike
(DATABASE_URL picks the database)."""

from __future__ import annotations

import uuid

import pytest

from executions.models import Agent, AgentVersion, Execution
from tests.compat.conftest import DOUBLER, NUMBER_SCHEMA, make_agent

pytestmark = pytest.mark.django_db

NUL = "a\x00b"
SURROGATE = "sur\ud800x"
HUGE = "99999999999999999999"


@pytest.fixture
def julep_agent(owner):
    return make_agent(owner.workspace, "julep-owner", {}, type="agent")


@pytest.fixture
def task(owner, julep_agent):
    made = owner.post(
        f"/julep/agents/{julep_agent.pk}/tasks", {"name": "t", "main": DOUBLER["main"]}
    )
    assert made.status_code == 201, made.json()
    return made.json()


def julep_locs(response) -> list[list]:
    assert response["Content-Type"] == "application/json"
    return [d["loc"] for d in response.json()["detail"]]


def nothing_written(agents: int = 0, executions: int = 0) -> None:
    assert Agent.objects.count() == agents
    assert Execution.objects.count() == executions


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"name": NUL}, ["body", "name"]),
        ({"name": SURROGATE}, ["body", "name"]),
        ({"name": "n" * 201}, ["body", "name"]),
        ({"name": "ok", "about": NUL}, ["body", "about"]),
        ({"name": "ok", "metadata": {NUL: 1}}, ["body", "metadata", NUL]),
        ({"name": "ok", "metadata": {"k": [SURROGATE]}}, ["body", "metadata", "k"]),
        ({"name": "ok", "metadata": {"k": 2**70}}, ["body", "metadata", "k"]),
    ],
)
def test_julep_agent_create_refuses_unstorable_text_and_numbers(owner, body, loc):
    response = owner.post("/julep/agents", body)
    assert response.status_code == 422
    assert julep_locs(response)[0][: len(loc) - 1] == loc[:-1]
    assert loc[-1] in str(julep_locs(response)[0]) or loc[-1] == NUL
    nothing_written()


def test_julep_tasks_and_executions_refuse_bad_text_and_write_nothing(owner, julep_agent, task):
    before = AgentVersion.objects.count()
    bad_step = owner.post(
        f"/julep/agents/{julep_agent.pk}/tasks",
        {"name": "t2", "main": [{"evaluate": {"x": NUL}}]},
    )
    assert bad_step.status_code == 422
    assert julep_locs(bad_step)[0][:3] == ["body", "main", 0]
    sub_workflow = owner.post(
        f"/julep/agents/{julep_agent.pk}/tasks",
        {"name": "t3", "main": DOUBLER["main"], "other": [{"log": SURROGATE}]},
    )
    assert sub_workflow.status_code == 422
    assert julep_locs(sub_workflow)[0][:2] == ["body", "other"]
    assert AgentVersion.objects.count() == before
    nothing_written(agents=2)

    for body, loc in [
        ({"input": {"n": NUL}}, ["body", "input"]),
        ({"input": {"n": 1}, "metadata": {"k": NUL}}, ["body", "metadata"]),
        ({"input": {"n": 2**70}}, ["body", "input"]),
    ]:
        response = owner.post(f"/julep/tasks/{task['id']}/executions", body)
        assert response.status_code == 422, body
        assert julep_locs(response)[0][:2] == loc
    nothing_written(agents=2)


@pytest.mark.parametrize(
    ("query", "loc"),
    [
        ({"limit": HUGE}, ["query", "limit"]),
        ({"limit": "0"}, ["query", "limit"]),
        ({"offset": "-1"}, ["query", "offset"]),
        ({"offset": HUGE}, ["query", "offset"]),
        ({"sort_by": "name"}, ["query", "sort_by"]),
        ({"metadata_filter": NUL}, ["query", "metadata_filter"]),
        ({"metadata_filter": "[1]"}, ["query", "metadata_filter"]),
        ({"metadata_filter.k": NUL}, ["query", "metadata_filter", "k"]),
    ],
)
def test_julep_query_parameters_are_checked(owner, query, loc):
    response = owner.get("/julep/agents", **query)
    assert response.status_code == 422
    assert julep_locs(response)[0] == loc


def test_julep_ids_that_are_not_uuids_or_out_of_range_are_not_found(owner, task):
    for path in (
        "/julep/executions/not-a-uuid",
        f"/julep/executions/{uuid.uuid4()}",
        "/julep/tasks/12345",
        "/julep/agents/%00",
    ):
        response = owner.get(path)
        assert response.status_code in {404, 422}, path
        assert "detail" in response.json()
    execution = owner.post(f"/julep/tasks/{task['id']}/executions", {"input": {"n": 1}}).json()
    far = owner.get(f"/julep/executions/{execution['id']}/transitions/{HUGE}")
    assert far.status_code == 404
    token = owner.get(
        f"/julep/executions/{execution['id']}/transitions.stream", next_page_token="@@"
    )
    assert token.status_code == 422
    assert julep_locs(token) == [["query", "next_page_token"]]


def test_julep_v0_reports_the_fields_its_sdk_sent(owner, julep_agent):
    base = f"/julep/v0/agents/{julep_agent.pk}/tasks"
    unknown_tool = owner.post(
        base, {"name": "t", "tools_available": ["web"], "main": [{"evaluate": {"x": "1"}}]}
    )
    assert unknown_tool.status_code == 422
    assert julep_locs(unknown_tool) == [["body", "tools_available", 0]]
    unknown_step_tool = owner.post(
        base, {"name": "t", "main": [{"tool_id": "teleport", "arguments": {}}]}
    )
    assert unknown_step_tool.status_code == 422
    assert julep_locs(unknown_step_tool) == [["body", "main", 0, "tool_id"]]
    bad_text = owner.post(
        base, {"name": "t", "description": NUL, "main": [{"evaluate": {"x": "1"}}]}
    )
    assert julep_locs(bad_text) == [["body", "description"]]
    nothing_written(agents=1)

    made = owner.post(base, {"name": "t", "description": None, "main": [{"evaluate": {"x": "1"}}]})
    assert made.status_code == 201 and set(made.json()) == {"id", "created_at", "jobs"}
    task_id = made.json()["id"]
    start = f"{base}/{task_id}/executions"
    for body, loc in [
        ({"task_id": task_id, "arguments": {}, "status": "running"}, ["body", "status"]),
        ({"task_id": str(uuid.uuid4()), "arguments": {}, "status": "queued"}, ["body", "task_id"]),
        ({"task_id": task_id, "arguments": {"x": NUL}, "status": "queued"}, ["body", "arguments"]),
    ]:
        response = owner.post(start, body)
        assert response.status_code == 422, body
        assert julep_locs(response)[0][:2] == loc
    nothing_written(agents=2)

    started = owner.post(start, {"task_id": task_id, "arguments": {}, "status": "queued"})
    assert started.status_code == 201
    other_task = owner.get(f"/julep/v0/tasks/{uuid.uuid4()}/executions/{started.json()['id']}")
    assert other_task.status_code == 404 and "detail" in other_task.json()


@pytest.fixture
def doubler(owner):
    return make_agent(owner.workspace, "doubler", DOUBLER, schema=NUMBER_SCHEMA)


def moderately_fields(response) -> list[str]:
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "VALIDATION_ERROR"
    return [d["field"] for d in body["details"]]


def test_bodies_that_are_not_objects_and_fields_out_of_their_schema_are_refused(
    owner, task, doubler
):
    # ninja's Schema reads attributes off any value: a list body once started an execution
    # with every field left out (found by schemathesis's seeded pass, .ci/schemathesis.sh).
    for body in ([None, None], "text", 3):
        response = owner.post(f"/julep/tasks/{task['id']}/executions", body)
        assert response.status_code == 422, body
        assert owner.post("/moderately/agent-executions", body).status_code == 400, body
    numbered = owner.post(
        f"/julep/agents/{task['agent_id']}/tasks/{task['id']}",
        {"name": "t", "main": DOUBLER["main"], "inherit_tools": 0},
    )
    assert numbered.status_code == 422
    assert julep_locs(numbered)[0] == ["body", "inherit_tools"]
    # A name the document says must not be blank: refused, where an update once kept the old.
    for name in ("", "   "):
        blank = owner.post(
            f"/julep/agents/{task['agent_id']}/tasks/{task['id']}",
            {"name": name, "main": DOUBLER["main"]},
        )
        assert blank.status_code == 422, name
        assert julep_locs(blank)[0] == ["body", "name"]
        assert owner.post("/julep/agents", {"name": name}).status_code == 422
    nothing_written(agents=3)


def test_moderately_refuses_bad_create_input_and_writes_nothing(owner, doubler):
    path = "/moderately/agent-executions"
    ok = {"agent_id": str(doubler.pk), "input_data": {"n": 1}}
    for body, field in [
        ({**ok, "session_id": "s" * 201}, "session_id"),
        ({**ok, "session_id": NUL}, "session_id"),
        ({**ok, "input_data": {"n": NUL}}, "input_data"),
        ({**ok, "metadata": {SURROGATE: 1}}, "metadata"),
        ({**ok, "agent_id": NUL}, "agent_id"),
        ({**ok, "version_id": "v" * 65}, "version_id"),
    ]:
        assert moderately_fields(owner.post(path, body))[0].startswith(field), body
    long_key = owner.post(path, ok, **{"Idempotency-Key": "k" * 10_000})
    assert moderately_fields(long_key) == ["Idempotency-Key"]
    nothing_written(agents=1)


def test_moderately_checks_query_parameters_and_ids(owner, doubler):
    path = "/moderately/agent-executions"
    assert moderately_fields(owner.get(path, page=HUGE)) == ["page"]
    assert moderately_fields(owner.get(path, page_size="0")) == ["page_size"]
    assert moderately_fields(owner.get(path, agent_id=NUL)) == ["agent_id"]
    assert moderately_fields(owner.get(path, teamIds=NUL))[0].startswith("teamIds")
    assert moderately_fields(owner.get(path, order_by="secret")) == ["order_by"]
    missing = owner.get(f"{path}/not-a-uuid")
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"


def test_discuro_answers_its_400_for_any_malformed_id(owner):
    for bad in (NUL, "x" * 10_000, HUGE):
        response = owner.client.post(
            f"/discuro/v1/executions/retrieve?id={bad}", HTTP_X_API_KEY=owner.key
        )
        assert response.status_code == 400
        assert response.json() == {
            "error": "Operation failed - execution_log not found",
            "meta_data": None,
        }


@pytest.mark.parametrize(
    "path", ["/julep/nope", "/julep/v0/nope", "/moderately/nope", "/discuro/nope"]
)
def test_a_post_to_an_unknown_path_is_the_faces_json_404_not_a_csrf_page(db, path):
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post(path, "{}", content_type="application/json")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


def test_a_method_a_path_does_not_take_is_the_faces_json_405(owner):
    julep = owner.client.delete("/julep/agents", HTTP_X_API_KEY=owner.key)
    assert julep.status_code == 405 and julep["Allow"]
    assert "not allowed" in julep.json()["detail"]
    moderately = owner.client.put("/moderately/agent-executions", HTTP_X_API_KEY=owner.key)
    assert moderately.status_code == 405 and moderately.json()["code"] == "METHOD_NOT_ALLOWED"
