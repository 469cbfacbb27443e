"""Helpers for engine tests: make an agent from a definition, start it, and run it to a stop
in this thread (the runner is the same code a worker calls)."""

from __future__ import annotations

from typing import Any

from executions import lifecycle, services
from executions.engine import runner
from executions.lifecycle import Status
from executions.models import Agent, Execution

# The bench's workload (bench/engine.py): three pure steps, x = n*2, y = x+1, {result: y}.
THREE_STEPS = {
    "main": [
        {"evaluate": {"x": "$ inputs['n'] * 2"}},
        {"evaluate": {"y": "$ _['x'] + 1"}},
        {"return": {"result": "$ _['y']"}},
    ]
}


def prompt_workflow(base_url: str) -> dict[str, Any]:
    """One prompt to an OpenAI-compatible server at `base_url` (a local test server)."""
    return {
        "model": {"provider": "openai", "name": "m", "base_url": base_url},
        "main": [{"prompt": "hello", "unwrap": True}],
    }


def make_agent(
    workspace: Any,
    name: str,
    type: str,
    config: dict[str, Any],
    *,
    input_schema: dict | None = None,
    output_schema: dict | None = None,
) -> Agent:
    agent = services.agent_create(workspace=workspace, name=name, type=type)
    services.agent_version_create(
        agent=agent, config=config, input_schema=input_schema, output_schema=output_schema
    )
    agent.refresh_from_db()
    return agent


def start(agent: Agent, input: Any = None) -> Execution:
    execution, _ = services.execution_start(
        workspace=agent.workspace, agent=agent, input=input or {}
    )
    return execution


def drain(execution: Execution, *, rounds: int = 20) -> Execution:
    """Run the execution and any runnable children (no lease, pending/running) until nothing
    moves, as a worker would, then return it fresh from the database."""
    for _ in range(rounds):
        runnable = list(
            Execution.objects.filter(
                status__in=[Status.PENDING, Status.RUNNING], lease_owner=""
            ).order_by("-created_at")
        )
        before = {e.pk: (e.status, e.transition_count) for e in runnable}
        if not runnable:
            break
        for candidate in runnable:
            runner.run(candidate.pk)
        after = {
            e.pk: (e.status, e.transition_count)
            for e in Execution.objects.filter(pk__in=list(before))
        }
        if after == before:
            break
    execution.refresh_from_db()
    return execution


def steps(execution: Execution) -> list[str]:
    return list(
        execution.transitions.filter(type="step")
        .order_by("seq")
        .values_list("step_path", flat=True)
    )


def decide(execution: Execution, *, approve: bool, payload: Any = None, reason: str = "") -> None:
    """What the approvals app does on a decision (see engine/checkpoints.py)."""
    from approvals.models import Approval, ApprovalDecision

    approval = Approval.objects.get(execution=execution, status="pending")
    approval.status = "approved" if approve else "rejected"
    if payload is not None:
        approval.result_payload = payload
    approval.decided_by_label = "tester"
    approval.save()
    ApprovalDecision.objects.create(
        approval=approval,
        decision="approve" if approve else "reject",
        reason=reason,
        actor_label="tester",
    )
    execution.refresh_from_db()
    if approve or not approval.reject_ends:
        lifecycle.transition(execution, Status.RUNNING, type="approved" if approve else "rejected")
    else:
        lifecycle.transition(execution, Status.REJECTED, type="rejected")
