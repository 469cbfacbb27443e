"""Agents (model + tools loop) and Python agents, on the offline builtin model."""

from __future__ import annotations

import pytest

from executions import services
from executions.engine import python_agents, runner
from executions.models import DemoOrder

from .engine_helpers import decide, drain, make_agent, start, steps


def scripted(*replies, **extra):
    return {"provider": "builtin", "name": "scripted", "script": list(replies), **extra}


def test_an_agent_calls_tools_in_parallel_and_answers(workspace):
    DemoOrder.objects.create(workspace=workspace, order_id="A-1", customer="Lee", total=20)
    agent = make_agent(
        workspace,
        "helper",
        "agent",
        {
            "model": scripted(
                {
                    "content": "Checking. ",
                    "tool_calls": [
                        {"name": "calculator", "arguments": {"expression": "2+3"}},
                        {"name": "order_lookup", "arguments": {"order_id": "A-1"}},
                    ],
                },
                "Done: {tool_results}",
            ),
            "system_prompt": "Help {{ inputs['question'] }}",
            "tools": ["calculator", "order_lookup"],
        },
    )
    execution = drain(start(agent, {"question": "what?"}))
    assert execution.status == "completed", execution.error
    assert '"result": 5' in execution.output["response"]
    assert '"customer": "Lee"' in execution.output["response"]
    assert steps(execution) == [
        "agent.llm[0]",
        "agent.tool[0][0]",
        "agent.tool[0][1]",
        "agent.llm[1]",
    ]
    second_call = execution.transitions.get(step_path="agent.llm[1]")
    roles = [m["role"] for m in second_call.input["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool"]
    assert second_call.input["messages"][0]["content"] == "Help what?"
    types = list(execution.events.values_list("type", flat=True))
    assert types[0] == "execution" and types[-1] == "done"
    assert {"tool_start", "tool_end", "content"} <= set(types)
    assert execution.token_usage["total_tokens"] == sum(
        t.usage["total_tokens"] for t in execution.transitions.filter(usage__isnull=False)
    )


def test_a_tool_error_is_recorded_and_shown_to_the_model(workspace):
    agent = make_agent(
        workspace,
        "clumsy",
        "agent",
        {
            "model": scripted(
                {"tool_calls": [{"name": "calculator", "arguments": {"expr": "1"}}]},
                {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1/0"}}]},
                "gave up",
            ),
            "tools": ["calculator"],
        },
    )
    execution = drain(start(agent, {"question": "?"}))
    assert execution.status == "completed"
    bad_args = execution.transitions.get(step_path="agent.tool[0][0]").output
    assert bad_args["error"].startswith("invalid arguments")
    crashed = execution.transitions.get(step_path="agent.tool[1][0]").output
    assert "ZeroDivisionError" in crashed["error"]
    last = execution.transitions.get(step_path="agent.llm[2]")
    assert "ZeroDivisionError" in last.input["messages"][-1]["content"]


def test_an_agent_that_keeps_calling_tools_fails_at_max_steps(workspace):
    agent = make_agent(
        workspace,
        "loopy",
        "agent",
        {
            "model": scripted(
                *[{"tool_calls": [{"name": "calculator", "arguments": {"expression": "1"}}]}] * 5
            ),
            "tools": ["calculator"],
            "max_steps": 3,
        },
    )
    execution = drain(start(agent, {"question": "?"}))
    assert execution.status == "failed"
    assert execution.error.startswith("budget exceeded: max_steps (3)")


def test_max_tokens_budget_fails_naming_it(workspace):
    agent = make_agent(
        workspace,
        "wordy",
        "agent",
        {"model": scripted("word " * 200), "limits": {"max_tokens": 50}},
    )
    execution = drain(start(agent, {"question": "talk"}))
    assert execution.status == "failed"
    assert execution.error.startswith("budget exceeded: max_tokens (50)")
    assert execution.token_usage["total_tokens"] > 50


def test_a_tool_that_requires_approval_parks_and_runs_with_edited_arguments(workspace):
    from approvals.models import Approval

    order = DemoOrder.objects.create(workspace=workspace, order_id="B-1", total=500)
    agent = make_agent(
        workspace,
        "refunder",
        "agent",
        {
            "model": scripted(
                {
                    "tool_calls": [
                        {"name": "order_refund", "arguments": {"order_id": "B-1", "amount": 400}}
                    ]
                },
                "Refunded.",
            ),
            "tools": [{"name": "order_refund", "requires_approval": True}],
        },
    )
    execution = drain(start(agent, {"question": "refund please"}))
    assert execution.status == "awaiting_approval"
    approval = Approval.objects.get(execution=execution)
    assert approval.payload == {
        "tool": "order_refund",
        "arguments": {"order_id": "B-1", "amount": 400},
    }
    assert "edit" in approval.allowed_actions
    assert approval.reject_ends is False
    order.refresh_from_db()
    assert order.refund_count == 0
    decide(
        execution,
        approve=True,
        payload={"tool": "order_refund", "arguments": {"order_id": "B-1", "amount": 100}},
    )
    execution = drain(execution)
    assert execution.status == "completed", execution.error
    order.refresh_from_db()
    assert order.refund_count == 1 and float(order.refunded) == 100.0


def test_a_rejected_tool_call_is_reported_to_the_model(workspace):
    agent = make_agent(
        workspace,
        "refunder2",
        "agent",
        {
            "model": scripted(
                {"tool_calls": [{"name": "calculator", "arguments": {"expression": "1+1"}}]},
                "OK, I will not: {tool_results}",
            ),
            "tools": [{"name": "calculator", "requires_approval": True}],
        },
    )
    execution = drain(start(agent, {"question": "?"}))
    decide(execution, approve=False, reason="not allowed")
    execution = drain(execution)
    assert execution.status == "completed"
    assert "refused" in execution.output["response"]
    assert "not allowed" in execution.output["response"]


def test_output_schema_parses_json_answers(workspace):
    agent = make_agent(
        workspace,
        "jsonish",
        "agent",
        {"model": scripted('{"answer": 42}')},
        output_schema={"type": "object", "required": ["answer"]},
    )
    execution = drain(start(agent, {"question": "?"}))
    assert execution.status == "completed"
    assert execution.output == {"answer": 42}


@pytest.fixture
def registered_agents():
    before = dict(python_agents.REGISTRY)
    yield python_agents.REGISTRY
    python_agents.REGISTRY.clear()
    python_agents.REGISTRY.update(before)


def test_the_python_greeter_runs_with_recorded_steps(workspace):
    from executions.demo import sync_python_agents

    agent = sync_python_agents(workspace=workspace)["python-greeter"]
    execution = drain(start(agent, {"name": "  ada "}))
    assert execution.status == "completed", execution.error
    assert execution.output["greeting"] == "Hello, Ada!"
    assert steps(execution) == ["py.step[normalise-name]", "py.emit[0]", "py.llm[0]"]


def test_python_agent_calls_are_replayed_not_repeated(workspace, registered_agents):
    calls = []

    @python_agents.agent("counter")
    def counter(ctx, input):
        first = ctx.step("side-effect", lambda: calls.append("ran") or len(calls))
        approved = ctx.approval("Go on?", payload={"n": first})
        total = ctx.tool("calculator", expression=f"{approved['n']} + 1")
        ctx.emit("content", {"content": "done"})
        return {"total": total["result"]}

    agent = services.agent_create(workspace=workspace, name="counter", type="python")
    execution = drain(start(agent, {}))
    assert execution.status == "awaiting_approval"
    decide(execution, approve=True, payload={"n": 10})
    execution = drain(execution)
    assert execution.status == "completed", execution.error
    assert execution.output == {"total": 11}
    assert calls == ["ran"]  # the function ran twice, its recorded step once
    runner.run(execution.pk)  # a stray duplicate task changes nothing
    assert calls == ["ran"]


def test_a_python_agent_can_handle_a_rejection(workspace, registered_agents):
    @python_agents.agent("polite")
    def polite(ctx, input):
        try:
            ctx.approval("May I?", on_reject="raise")
        except Exception as exc:  # ApprovalRejected
            return {"refused": str(exc)}
        return {"refused": None}

    agent = services.agent_create(workspace=workspace, name="polite", type="python")
    execution = drain(start(agent, {}))
    decide(execution, approve=False, reason="no")
    execution = drain(execution)
    assert execution.status == "completed"
    assert execution.output == {"refused": "rejected: no"}


def test_an_unregistered_python_agent_fails_readably(workspace):
    agent = services.agent_create(workspace=workspace, name="ghost", type="python")
    execution = drain(start(agent, {}))
    assert execution.status == "failed"
    assert "no Python agent named 'ghost'" in execution.error
