"""External agents report events and ask for approvals through the API; programs long-poll."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from approvals.models import Approval
from executions import services
from executions.lifecycle import Status
from executions.models import Execution
from tests.approvals.conftest import approval_workflow, run_to_stop


@pytest.fixture
def external(owner):
    agent = services.agent_create(workspace=owner.workspace, name="outside", type="external")
    execution, _ = services.execution_start(workspace=owner.workspace, agent=agent, input={})
    return execution


def ask(member, execution, **body):
    return member.post(f"/api/v1/executions/{execution.pk}/approvals", body)


def test_events_are_recorded_in_order_and_usage_is_rolled_up(owner, external):
    response = owner.post(
        f"/api/v1/executions/{external.pk}/events",
        {
            "events": [
                {
                    "type": "step",
                    "name": "plan",
                    "output": {"n": 2},
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5},
                    "cost": 0.01,
                },
                {"type": "content", "content": "Hel"},
                {
                    "type": "usage",
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                    "cost": "0.005",
                },
                {"type": "log", "message": "halfway"},
            ]
        },
    )
    assert response.status_code == 200, response.json()
    data = response.json()["data"]
    assert data["status"] == "running"
    assert data["token_usage"] == {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}
    assert data["cost"] == pytest.approx(0.015)
    history = list(external.transitions.order_by("seq").values_list("type", "step_path"))
    assert history == [("init", ""), ("start", ""), ("step", "plan"), ("usage", ""), ("log", "")]
    assert external.events.get().data == {"content": "Hel"}

    done = owner.post(
        f"/api/v1/executions/{external.pk}/events", {"type": "completed", "output": {"ok": True}}
    )
    assert done.json()["data"]["status"] == "completed"
    late = owner.post(f"/api/v1/executions/{external.pk}/events", {"type": "log", "message": "x"})
    assert late.status_code == 409


def test_a_bad_batch_is_refused_whole(owner, external):
    response = owner.post(
        f"/api/v1/executions/{external.pk}/events",
        {"events": [{"type": "log", "message": "fine"}, {"type": "explode"}]},
    )
    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "events[1].type"
    assert external.transitions.count() == 1  # only init
    failed = owner.post(f"/api/v1/executions/{external.pk}/events", {"type": "failed"})
    assert failed.json()["details"][0]["field"] == "events[0].error"


def test_an_engine_run_execution_accepts_neither_events_nor_api_approvals(owner, agent):
    execution, _ = services.execution_start(workspace=owner.workspace, agent=agent, input={"n": 1})
    events = owner.post(
        f"/api/v1/executions/{execution.pk}/events", {"type": "log", "message": "x"}
    )
    assert events.status_code == 409
    assert events.json()["code"] == "not_external"
    assert ask(owner, execution, title="x").status_code == 409


def test_an_external_approval_parks_the_run_and_validates_its_options(owner, external):
    bad = ask(owner, external, title="", timeout="soon", assignees=["nobody"], on_timeout="explode")
    assert bad.status_code == 422
    fields = {d["field"] for d in bad.json()["details"]}
    assert fields == {"title", "timeout", "on_timeout", "assignees.users"}

    created = ask(owner, external, title="Go?", timeout="2s", payload={"x": 1})
    assert created.status_code == 201
    approval = created.json()["data"]
    assert approval["source"] == "external"
    assert approval["payload"] == {"x": 1}
    external.refresh_from_db()
    assert external.status == Status.AWAITING_APPROVAL
    again = ask(owner, external, title="Again?")
    assert again.status_code == 409
    assert again.json()["details"]["approval_id"] == approval["id"]
    saved = Approval.objects.get(pk=approval["id"])
    assert 1.5 < (saved.expires_at - saved.created_at).total_seconds() < 2.5


def test_a_quorum_can_require_several_rejections(owner, teammate, viewer, external, workspace):
    from tests.conftest import make_member

    sam = make_member(workspace, "sam", "reviewer")
    approval = ask(
        owner, external, title="Risky", required_approvals=2, required_rejections=2
    ).json()["data"]
    url = f"/api/v1/approvals/{approval['id']}/decide"
    first = teammate.post(url, {"decision": "reject", "reason": "hmm"}).json()["data"]
    assert first["status"] == "pending"
    assert first["progress"]["rejections"] == 1
    assert sam.post(url, {"decision": "reject"}).json()["data"]["status"] == "rejected"
    external.refresh_from_db()
    assert external.status == Status.REJECTED


def test_reject_ends_false_hands_the_run_back_to_the_program(owner, teammate, external):
    approval = ask(owner, external, title="Try?", reject_ends=False).json()["data"]
    teammate.post(f"/api/v1/approvals/{approval['id']}/decide", {"decision": "reject"})
    external.refresh_from_db()
    assert external.status == Status.RUNNING
    from django_tasks_db.models import DBTaskResult

    assert not DBTaskResult.objects.filter(queue_name="executions").exists()


def test_wait_returns_at_the_timeout_while_pending(owner, external):
    approval = ask(owner, external, title="Slow").json()["data"]
    started = time.monotonic()
    response = owner.get(f"/api/v1/approvals/{approval['id']}/wait", timeout="0.3")
    assert 0.25 < time.monotonic() - started < 2
    assert response.json()["data"]["status"] == "pending"
    assert response.json()["meta"] == {"decided": False}


def test_wait_is_capped_by_the_deployment_whatever_the_timeout_asks(owner, external, settings):
    settings.APPROVAL_WAIT_MAX_SECONDS = 0.3
    approval = ask(owner, external, title="Capped").json()["data"]
    started = time.monotonic()
    response = owner.get(f"/api/v1/approvals/{approval['id']}/wait", timeout="300")
    assert time.monotonic() - started < 5  # 300 s asked: the cap answered
    assert response.json()["data"]["status"] == "pending"
    assert response.json()["meta"] == {"decided": False}


@pytest.mark.django_db(transaction=True)
def test_wait_returns_as_soon_as_someone_decides(owner, teammate):
    agent = approval_workflow(owner.workspace)
    execution, _ = services.execution_start(workspace=owner.workspace, agent=agent, input={})
    execution = run_to_stop(execution)
    approval = Approval.objects.get(execution=execution)

    def decide_soon() -> None:
        try:
            time.sleep(0.4)
            teammate.post(f"/api/v1/approvals/{approval.pk}/decide", {"decision": "approve"})
        finally:
            connection.close()  # this thread's: the test client leaves it open

    thread = threading.Thread(target=decide_soon)
    thread.start()
    started = time.monotonic()
    response = owner.get(f"/api/v1/approvals/{approval.pk}/wait", timeout="20")
    waited = time.monotonic() - started
    thread.join()
    assert response.json()["data"]["status"] == "approved"
    assert response.json()["meta"] == {"decided": True}
    assert waited < 3
    assert Execution.objects.get(pk=execution.pk).status == Status.RUNNING
