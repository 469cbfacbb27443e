"""Deciding checkpoints through the API: the demo refund desk end to end, who may decide,
edits and responses validated, quorum, idempotency, the 409 for a late decision, bulk, and
the audit trail on the execution."""

from __future__ import annotations

from approvals.models import Approval
from executions.lifecycle import Status
from executions.models import Execution
from tests.approvals.conftest import approval_workflow, make_workflow, run_to_stop


def pending(execution: Execution) -> Approval:
    return Approval.objects.get(execution=execution, status="pending")


def decide(member, approval, **body):
    headers = {}
    if "idempotency_key" in body:
        headers["Idempotency-Key"] = body.pop("idempotency_key")
    return member.post(f"/api/v1/approvals/{approval.pk}/decide", body, **headers)


# --- the demo refund desk ("Done when") -------------------------------------------------------


def test_a_refund_above_100_appears_in_the_approval_inbox(refund_desk, start, teammate):
    execution = start(refund_desk, {"order_id": "A-1001", "amount": 250})
    assert execution.status == Status.AWAITING_APPROVAL

    inbox = teammate.get("/api/v1/executions/approval-inbox").json()
    assert inbox["meta"]["total"] == 1
    item = inbox["data"][0]
    assert item["id"] == str(execution.pk)
    assert item["status"] == "awaiting_approval"
    assert item["approval_expires_at"] is not None
    (approval,) = item["pending_approvals"]
    assert approval["title"] == "Refund 250 on order A-1001?"
    assert approval["payload"] == {"order_id": "A-1001", "amount": 250}

    listed = teammate.get("/api/v1/approvals", status="pending").json()
    assert [a["id"] for a in listed["data"]] == [approval["id"]]
    assert listed["data"][0]["can_decide"] is True
    assert "<strong>Ada Lovelace</strong>" in listed["data"][0]["description_html"]


def test_a_viewer_cannot_decide_the_refund(refund_desk, start, viewer):
    execution = start(refund_desk, {"order_id": "A-1001", "amount": 250})
    response = decide(viewer, pending(execution), decision="approve")
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden_role"
    assert pending(execution).decisions.count() == 0


def test_the_assignee_edits_the_amount_and_the_refund_uses_it(refund_desk, start, teammate):
    execution = start(refund_desk, {"order_id": "A-1001", "amount": 250})
    approval = pending(execution)

    response = decide(
        teammate,
        approval,
        decision="edit",
        payload={"order_id": "A-1001", "amount": 120},
        reason="partial refund: one gear was fine",
    )
    assert response.status_code == 200, response.json()
    body = response.json()["data"]
    assert body["status"] == "approved"
    assert body["result_payload"]["amount"] == 120
    assert body["decided_by"] == "key:rory"

    execution = run_to_stop(execution)
    assert execution.status == Status.COMPLETED
    assert execution.output["refund"]["refunded"] == 120.0

    again = decide(teammate, approval, decision="approve")
    assert again.status_code == 409
    error = again.json()
    assert error["code"] == "already_decided"
    assert "already approved by key:rory at" in error["error"]
    assert error["details"]["decision"] == "edit"

    shortcut = teammate.post(f"/api/v1/executions/{execution.pk}/approve", {})
    assert shortcut.status_code == 409
    assert shortcut.json()["code"] == "already_decided"


def test_an_edit_that_breaks_the_payload_schema_is_refused(refund_desk, start, teammate):
    execution = start(refund_desk, {"order_id": "A-1001", "amount": 250})
    response = decide(
        teammate, pending(execution), decision="edit", payload={"order_id": "A-1001", "amount": -5}
    )
    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "payload.amount"
    assert pending(execution).decisions.count() == 0


def test_deny_ends_the_refund_as_rejected_with_the_reason(refund_desk, start, teammate):
    execution = start(refund_desk, {"order_id": "A-1003", "amount": 400})
    response = teammate.post(f"/api/v1/executions/{execution.pk}/deny", {"reason": "fraud"})
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["id"] == str(execution.pk)
    assert data["status"] == "rejected"
    assert "fraud" in data["error"]
    execution.refresh_from_db()
    assert execution.status == Status.REJECTED
    assert not Execution.objects.filter(pk=execution.pk, status=Status.RUNNING).exists()


def test_the_approve_shortcut_returns_the_running_execution(refund_desk, start, teammate):
    execution = start(refund_desk, {"order_id": "A-1001", "amount": 250})
    response = teammate.post(f"/api/v1/executions/{execution.pk}/approve", {"reason": "ok"})
    assert response.status_code == 200
    assert response.json()["data"]["status"] == "running"
    assert run_to_stop(execution).output["refund"]["refunded"] == 250.0


def test_a_repeat_with_the_same_idempotency_key_returns_the_first_answer(
    refund_desk, start, teammate
):
    execution = start(refund_desk, {"order_id": "A-1001", "amount": 250})
    approval = pending(execution)
    first = decide(teammate, approval, decision="approve", idempotency_key="click-1")
    repeat = decide(teammate, approval, decision="approve", idempotency_key="click-1")
    assert first.status_code == repeat.status_code == 200
    assert repeat["Idempotent-Replayed"] == "true"
    assert repeat.json()["data"]["decided_at"] == first.json()["data"]["decided_at"]
    assert approval.decisions.count() == 1
    assert execution.transitions.filter(type="approved").count() == 1


# --- who may decide ---------------------------------------------------------------------------


def test_only_named_assignees_may_decide(owner, teammate):
    agent = approval_workflow(owner.workspace, assignees=["rory"])
    execution = run_to_stop(_start(owner, agent))
    approval = pending(execution)

    refused = decide(owner, approval, decision="approve")
    assert refused.status_code == 403
    assert refused.json()["code"] == "not_assignee"
    assert refused.json()["details"]["assignees"]["users"] == ["rory"]
    assert decide(teammate, approval, decision="approve").status_code == 200


def test_a_role_assignee_covers_that_role_and_above(owner, teammate, viewer):
    agent = approval_workflow(owner.workspace, assignee_roles=["admin"])
    execution = run_to_stop(_start(owner, agent))
    approval = pending(execution)
    assert decide(teammate, approval, decision="approve").status_code == 403
    assert decide(owner, approval, decision="approve").status_code == 200


def test_whoever_started_it_cannot_approve_when_self_approval_is_forbidden(owner, teammate):
    agent = approval_workflow(owner.workspace, forbid_self_approval=True)
    execution = run_to_stop(_start(teammate, agent))
    approval = pending(execution)
    refused = decide(teammate, approval, decision="approve")
    assert refused.status_code == 403
    assert refused.json()["code"] == "self_approval_forbidden"
    assert decide(owner, approval, decision="approve").status_code == 200


def test_another_workspace_cannot_see_or_decide_it(refund_desk, start, outsider):
    execution = start(refund_desk, {"order_id": "A-1001", "amount": 250})
    approval = pending(execution)
    assert outsider.get(f"/api/v1/approvals/{approval.pk}").status_code == 404
    assert decide(outsider, approval, decision="approve").status_code == 404
    assert outsider.post(f"/api/v1/executions/{execution.pk}/approve", {}).status_code == 404
    assert outsider.get("/api/v1/executions/approval-inbox").json()["data"] == []


# --- quorum -----------------------------------------------------------------------------------


def test_a_quorum_of_two_needs_two_distinct_people(owner, teammate, workspace):
    agent = approval_workflow(owner.workspace, required_approvals=2)
    execution = run_to_stop(_start(owner, agent))
    approval = pending(execution)

    first = decide(teammate, approval, decision="approve")
    assert first.status_code == 200
    assert first.json()["data"]["status"] == "pending"
    assert first.json()["data"]["progress"]["text"] == "1 of 2"

    # The same person again, even with another of their keys, does not count twice.
    from executions import services

    _, second_key = services.apikey_create(
        workspace=workspace, name="rory-2", role="reviewer", created_by=teammate.user
    )
    twice = teammate.client.post(
        f"/api/v1/approvals/{approval.pk}/decide",
        {"decision": "approve"},
        content_type="application/json",
        HTTP_X_API_KEY=second_key,
    )
    assert twice.status_code == 409
    assert twice.json()["code"] == "already_voted"
    assert "1 of 2" in twice.json()["error"]
    execution.refresh_from_db()
    assert execution.status == Status.AWAITING_APPROVAL

    second = decide(owner, approval, decision="approve")
    assert second.json()["data"]["status"] == "approved"
    assert second.json()["data"]["progress"]["approvals"] == 2
    assert run_to_stop(execution).status == Status.COMPLETED


def test_any_reject_ends_a_quorum(owner, teammate):
    agent = approval_workflow(owner.workspace, name="strict", required_approvals=2)
    execution = run_to_stop(_start(owner, agent))
    decide(owner, pending(execution), decision="approve")
    rejected = decide(teammate, pending(execution), decision="reject", reason="no")
    assert rejected.json()["data"]["status"] == "rejected"
    execution.refresh_from_db()
    assert execution.status == Status.REJECTED
    assert "rejected by key:rory: no" in execution.error


# --- what the step gets back ------------------------------------------------------------------


def test_a_rejection_with_an_on_reject_branch_continues_the_run(owner, teammate):
    agent = make_workflow(
        owner.workspace,
        "branchy",
        [
            {
                "approval": {
                    "title": "Publish?",
                    "payload": {"post": "hello"},
                    "on_reject": [{"return": {"published": False, "why": "$ _['reason']"}}],
                }
            },
            {"return": {"published": True}},
        ],
    )
    execution = run_to_stop(_start(owner, agent))
    decide(teammate, pending(execution), decision="reject", reason="typo in title")
    execution = run_to_stop(execution)
    assert execution.status == Status.COMPLETED
    assert execution.output == {"published": False, "why": "typo in title"}


def test_a_response_is_validated_against_its_form_and_becomes_the_output(owner, teammate):
    agent = approval_workflow(
        owner.workspace,
        allowed_actions=["respond", "reject"],
        response_schema={
            "type": "object",
            "properties": {"priority": {"enum": ["low", "high"]}},
            "required": ["priority"],
        },
    )
    execution = run_to_stop(_start(owner, agent))
    approval = pending(execution)
    bad = decide(teammate, approval, decision="respond", response={"priority": "urgent"})
    assert bad.status_code == 422
    assert bad.json()["details"][0]["field"] == "response.priority"
    not_allowed = decide(teammate, approval, decision="approve")
    assert not_allowed.status_code == 422

    ok = decide(teammate, approval, decision="respond", response={"priority": "high"})
    assert ok.json()["data"]["response"] == {"priority": "high"}
    assert run_to_stop(execution).output == {"approved": {"priority": "high"}}


def test_an_option_must_be_one_of_the_offered_ones(owner, teammate):
    agent = approval_workflow(owner.workspace, options=["ship", "hold"])
    execution = run_to_stop(_start(owner, agent))
    approval = pending(execution)
    assert decide(teammate, approval, decision="approve").status_code == 422
    assert decide(teammate, approval, decision="approve", option="later").status_code == 422
    chosen = decide(teammate, approval, decision="approve", option="hold")
    assert chosen.json()["data"]["chosen_options"] == ["hold"]


# --- history, comments, bulk, lists -------------------------------------------------------------


def test_every_decision_and_comment_is_on_the_execution_timeline(owner, teammate):
    agent = approval_workflow(owner.workspace, required_approvals=2)
    execution = run_to_stop(_start(owner, agent))
    approval = pending(execution)
    added = teammate.post(
        f"/api/v1/approvals/{approval.pk}/comments", {"body": "Checked the **invoice**."}
    )
    assert added.status_code == 201
    assert added.json()["data"]["author"]["user"] == "rory"
    assert "<strong>invoice</strong>" in added.json()["data"]["body_html"]
    decide(teammate, approval, decision="approve", reason="looks right")
    decide(owner, approval, decision="approve")

    comments = owner.get(f"/api/v1/approvals/{approval.pk}/comments").json()["data"]
    assert [c["body"] for c in comments] == ["Checked the **invoice**."]
    timeline = owner.get(f"/api/v1/executions/{execution.pk}/transitions", limit=100).json()
    rows = [(t["type"], t["actor"]["label"]) for t in timeline["data"]]
    assert ("comment", "key:rory") in rows
    assert ("decision", "key:rory") in rows
    assert ("decision", "key:olivia") in rows
    assert rows.index(("decision", "key:olivia")) < rows.index(("approved", "key:olivia"))


def test_a_viewer_cannot_comment(refund_desk, start, viewer):
    execution = start(refund_desk, {"order_id": "A-1001", "amount": 250})
    response = viewer.post(f"/api/v1/approvals/{pending(execution).pk}/comments", {"body": "hi"})
    assert response.status_code == 403


def test_bulk_decide_reports_each_item_on_its_own(refund_desk, start, teammate, viewer, owner):
    first = start(refund_desk, {"order_id": "A-1001", "amount": 250})
    second = start(refund_desk, {"order_id": "A-1003", "amount": 300})
    already = start(refund_desk, {"order_id": "A-1004", "amount": 200})
    decide(owner, pending(already), decision="reject")
    done = Approval.objects.get(execution=already)

    ids = [str(pending(first).pk), str(pending(second).pk), str(done.pk), "nope"]
    refused = viewer.post("/api/v1/approvals/bulk-decide", {"ids": ids, "decision": "approve"})
    assert [i["result"] for i in refused.json()["data"]] == [
        "forbidden",
        "forbidden",
        "conflict",
        "not_found",
    ]

    response = teammate.post("/api/v1/approvals/bulk-decide", {"ids": ids, "decision": "approve"})
    assert response.status_code == 200
    results = {item["id"]: item["result"] for item in response.json()["data"]}
    assert results == {ids[0]: "ok", ids[1]: "ok", ids[2]: "conflict", "nope": "not_found"}
    assert response.json()["meta"]["counts"] == {"ok": 2, "conflict": 1, "not_found": 1}
    for execution in (first, second):
        execution.refresh_from_db()
        assert execution.status == Status.RUNNING


def test_bulk_decide_by_filter_decides_the_pending_ones(refund_desk, start, teammate):
    executions = [start(refund_desk, {"order_id": "A-1001", "amount": 150 + i}) for i in range(3)]
    response = teammate.post(
        "/api/v1/approvals/bulk-decide",
        {"filter": {"agent_id": str(refund_desk.pk)}, "decision": "reject", "reason": "batch"},
    )
    assert [i["result"] for i in response.json()["data"]] == ["ok", "ok", "ok"]
    for execution in executions:
        execution.refresh_from_db()
        assert execution.status == Status.REJECTED


def test_the_list_filters_and_orders_by_due_time(owner, teammate, workspace):
    late = approval_workflow(workspace, name="late", timeout_seconds=3600)
    soon = approval_workflow(workspace, name="soon", timeout_seconds=60, assignees=["rory"])
    never = approval_workflow(workspace, name="never")
    for agent in (never, late, soon):
        run_to_stop(_start(owner, agent))

    listed = owner.get("/api/v1/approvals").json()["data"]
    assert [a["agent_name"] for a in listed] == ["soon", "late", "never"]
    mine = teammate.get("/api/v1/approvals", assigned="me").json()["data"]
    assert [a["agent_name"] for a in mine] == ["soon"]
    by_agent = owner.get("/api/v1/approvals", agent_id=str(late.pk)).json()["data"]
    assert [a["agent_name"] for a in by_agent] == ["late"]
    assert owner.get("/api/v1/approvals", overdue="true").json()["data"] == []
    Approval.objects.filter(execution__agent=soon).update(expires_at="2000-01-01T00:00:00Z")
    overdue = owner.get("/api/v1/approvals", overdue="true").json()["data"]
    assert [a["agent_name"] for a in overdue] == ["soon"]
    assert overdue[0]["overdue"] is True
    bad = owner.get("/api/v1/approvals", status="maybe")
    assert bad.status_code == 422
    assert bad.json()["details"][0]["field"] == "status"


def test_markdown_descriptions_are_rendered_without_scripts(owner):
    agent = approval_workflow(
        owner.workspace,
        description="Hi <script>alert(1)</script> [x](javascript:alert(1)) **bold**",
    )
    execution = run_to_stop(_start(owner, agent))
    html = owner.get(f"/api/v1/approvals/{pending(execution).pk}").json()["data"][
        "description_html"
    ]
    assert "<strong>bold</strong>" in html
    assert "<script" not in html
    assert "javascript:" not in html


def _start(member, agent, input=None) -> Execution:
    response = member.post("/api/v1/executions", {"agent_id": str(agent.pk), "input": input or {}})
    assert response.status_code == 201, response.json()
    return Execution.objects.get(pk=response.json()["data"]["id"])
