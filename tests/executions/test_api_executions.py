"""/api/v1/executions: create, idempotency, filters, ordering, paging, cancel, resume, errors."""

from __future__ import annotations

from datetime import timedelta

from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from executions import lifecycle, services
from executions.models import Execution, Transition


def start(member, agent, **body):
    return member.post(f"/api/v1/agents/{agent.pk}/execute", {"input": {"n": 2}, **body})


def test_it_starts_an_execution_pending(owner, agent):
    r = start(owner, agent, metadata={"channel": "web"}, session_id="s-1")
    assert r.status_code == 201, r.content
    data = r.json()["data"]
    assert data["status"] == "pending"
    assert data["agent_id"] == str(agent.pk)
    assert data["execution_id"] == data["id"]
    assert data["metadata"] == {"channel": "web"} and data["session_id"] == "s-1"
    assert data["token_usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    execution = Execution.objects.get(pk=data["id"])
    assert execution.created_by_key.name == "olivia"


def test_post_executions_takes_the_agent_in_the_body(owner, agent):
    r = owner.post("/api/v1/executions", {"agent_id": str(agent.pk), "input": {"n": 1}})
    assert r.status_code == 201
    r = owner.post("/api/v1/executions", {"agent_id": "doubler", "input": {"n": 1}})
    assert r.status_code == 201, "an agent may be named instead of its id"


def test_it_lists_every_input_violation_with_422(owner, agent):
    r = owner.post(f"/api/v1/agents/{agent.pk}/execute", {"input": {"n": "two", "extra": 1}})
    assert r.status_code == 422
    assert r.json()["details"] == [
        {"field": "input.n", "message": "'two' is not of type 'integer'"}
    ]
    r = owner.post(f"/api/v1/agents/{agent.pk}/execute", {"input": {}})
    assert r.json()["details"][0]["field"] == "input.n"
    assert Execution.objects.count() == 0


def test_an_idempotent_repeat_returns_the_first_execution(owner, agent):
    first = (
        start(owner, agent, **{})
        if False
        else owner.post(
            f"/api/v1/agents/{agent.pk}/execute", {"input": {"n": 2}}, **{"Idempotency-Key": "k1"}
        )
    )
    again = owner.post(
        f"/api/v1/agents/{agent.pk}/execute", {"input": {"n": 2}}, **{"Idempotency-Key": "k1"}
    )
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["data"]["id"] == again.json()["data"]["id"]
    other = owner.post(
        f"/api/v1/agents/{agent.pk}/execute", {"input": {"n": 3}}, **{"Idempotency-Key": "k1"}
    )
    assert other.status_code == 409 and other.json()["code"] == "idempotency_conflict"
    assert Execution.objects.count() == 1


def test_malformed_json_is_a_400(owner, agent):
    r = owner.client.post(
        f"/api/v1/agents/{agent.pk}/execute",
        "{bad",
        content_type="application/json",
        HTTP_X_API_KEY=owner.key,
    )
    assert r.status_code == 400 and r.json()["code"] == "malformed_json"


@override_settings(MAX_REQUEST_BODY_BYTES=1000)
def test_a_body_over_the_limit_is_a_413(owner, agent):
    r = owner.post(f"/api/v1/agents/{agent.pk}/execute", {"input": {"n": 1, "pad": "x" * 2000}})
    assert r.status_code == 413
    assert Execution.objects.count() == 0


def test_it_filters_orders_and_paginates(owner, agent):
    ids = []
    for i in range(5):
        execution, _ = services.execution_start(
            workspace=owner.workspace,
            agent=agent,
            input={"n": i},
            metadata={"tier": "gold" if i % 2 else "free", "rank": i},
            session_id=f"s{i % 2}",
        )
        ids.append(str(execution.pk))
    services.execution_cancel(execution=Execution.objects.get(pk=ids[0]), actor=lifecycle.SYSTEM)

    def listed(**params):
        r = owner.get("/api/v1/executions", **params)
        assert r.status_code == 200, r.content
        return [e["id"] for e in r.json()["data"]]

    assert listed() == ids[::-1], "newest first by default"
    assert listed(status="cancelled") == [ids[0]]
    assert set(listed(status="pending,cancelled")) == set(ids)
    assert listed(metadata="tier=gold") == [ids[3], ids[1]]
    assert listed(metadata="rank=4") == [ids[4]]
    assert listed(session_id="s0", order_by="created_at", order_direction="asc") == [
        ids[0],
        ids[2],
        ids[4],
    ]
    assert listed(q=ids[2]) == [ids[2]]
    assert listed(agent_id=str(agent.pk), limit=2, page=2) == [ids[2], ids[1]]
    r = owner.get("/api/v1/executions", limit=2, page_size=2)
    assert r.json()["meta"] == {"page": 1, "limit": 2, "total": 5, "pages": 3}
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert listed(created_after=future) == []
    assert len(listed(created_before=future)) == 5


def test_cursor_mode_walks_deep_pages_without_counting(owner, agent):
    for i in range(5):
        services.execution_start(workspace=owner.workspace, agent=agent, input={"n": i})
    seen, cursor = [], ""
    while True:
        r = owner.get("/api/v1/executions", limit=2, cursor=cursor)
        body = r.json()
        assert "total" not in body["meta"]
        seen += [e["id"] for e in body["data"]]
        cursor = body["meta"]["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 5 == len(set(seen))


def test_bad_filters_name_the_field(owner):
    r = owner.get("/api/v1/executions", status="bogus", created_after="yesterday-ish")
    assert r.status_code == 422
    assert {d["field"] for d in r.json()["details"]} == {"status", "created_after"}
    r = owner.get("/api/v1/executions", order_by="password")
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "order_by"
    r = owner.get("/api/v1/executions", limit=0)
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "limit"


def test_get_tree_and_transitions(owner, agent):
    parent, _ = services.execution_start(workspace=owner.workspace, agent=agent, input={"n": 1})
    child, _ = services.execution_start(
        workspace=owner.workspace, agent=agent, input={"n": 2}, parent=parent
    )
    r = owner.get(f"/api/v1/executions/{parent.pk}")
    assert r.json()["data"]["id"] == str(parent.pk)
    tree = owner.get(f"/api/v1/executions/{parent.pk}/tree").json()["data"]
    assert [c["id"] for c in tree["children"]] == [str(child.pk)]
    assert tree["children"][0]["parent_execution_id"] == str(parent.pk)
    lifecycle.transition(parent, "running", type="start")
    steps = owner.get(f"/api/v1/executions/{parent.pk}/transitions").json()
    assert [(s["seq"], s["type"]) for s in steps["data"]] == [(1, "init"), (2, "start")]
    assert steps["meta"]["total"] == 2


def test_cancel_works_once_then_409_with_the_status(owner, agent):
    r = start(owner, agent)
    eid = r.json()["data"]["id"]
    r = owner.post(f"/api/v1/executions/{eid}/cancel", {})
    assert r.status_code == 200 and r.json()["data"]["status"] == "cancelled"
    r = owner.post(f"/api/v1/executions/{eid}/cancel")
    assert r.status_code == 409
    assert r.json()["details"]["status"] == "cancelled"
    steps = owner.get(f"/api/v1/executions/{eid}/transitions").json()["data"]
    assert steps[-1]["type"] == "cancelled" and steps[-1]["actor"]["label"] == "key:olivia"


def test_resume_only_from_awaiting_input(owner, agent):
    execution, _ = services.execution_start(workspace=owner.workspace, agent=agent, input={"n": 1})
    r = owner.post(f"/api/v1/executions/{execution.pk}/resume", {"input": {"answer": 1}})
    assert r.status_code == 409
    lifecycle.transition(execution, "running", type="start")
    lifecycle.transition(
        execution,
        "awaiting_input",
        type="wait",
        fields={
            "state": {
                "waiting": {"path": "main[0]", "schema": {"type": "object", "required": ["answer"]}}
            }
        },
    )
    r = owner.post(f"/api/v1/executions/{execution.pk}/resume", {"input": {}})
    assert r.status_code == 422 and r.json()["details"][0]["field"] == "input.answer"
    r = owner.post(f"/api/v1/executions/{execution.pk}/resume", {"input": {"answer": 1}})
    assert r.status_code == 200 and r.json()["data"]["status"] == "running"


def test_other_workspaces_and_viewers_are_refused(owner, outsider, viewer, agent):
    execution, _ = services.execution_start(workspace=owner.workspace, agent=agent, input={"n": 1})
    for path in ("", "/tree", "/transitions"):
        assert outsider.get(f"/api/v1/executions/{execution.pk}{path}").status_code == 404
    assert outsider.post(f"/api/v1/executions/{execution.pk}/cancel").status_code == 404
    assert (
        outsider.post(f"/api/v1/agents/{agent.pk}/execute", {"input": {"n": 1}}).status_code == 404
    )
    assert outsider.get("/api/v1/executions").json()["data"] == []
    assert viewer.get(f"/api/v1/executions/{execution.pk}").status_code == 200
    assert viewer.post(f"/api/v1/executions/{execution.pk}/cancel").status_code == 403
    assert start(viewer, agent).status_code == 403
    assert owner.get("/api/v1/executions/not-a-uuid").status_code == 404


def test_a_create_writes_the_row_and_its_init_entry_without_a_savepoint(
    transactional_db, owner, agent
):
    with CaptureQueriesContext(connection) as captured:
        execution, created = services.execution_start(
            workspace=owner.workspace, agent=agent, input={"n": 2}
        )
    statements = [q["sql"].split()[0].upper() for q in captured.captured_queries]
    assert created and "SAVEPOINT" not in statements and "UPDATE" not in statements
    # Two INSERTs: two statements, or one on PostgreSQL (WITH _first AS (INSERT …) INSERT …).
    inserts = sum(q["sql"].upper().count("INSERT INTO") for q in captured.captured_queries)
    assert inserts == 2
    execution.refresh_from_db()
    assert execution.transition_count == 1
    [init] = Transition.objects.filter(execution=execution)
    assert (init.seq, init.type, init.input, init.to_status) == (1, "init", {"n": 2}, "pending")
