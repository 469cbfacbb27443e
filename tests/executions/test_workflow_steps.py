"""Workflow step kinds, run by the engine (Julep task format plus our approval step)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from executions import services
from executions.engine import runner
from executions.errors import ValidationFailed
from executions.models import DemoOrder, Execution

from .engine_helpers import decide, drain, make_agent, start, steps


@pytest.fixture
def ws(workspace):
    return workspace


def run_workflow(ws, config, input=None, **kwargs) -> Execution:
    agent = make_agent(ws, "wf", "workflow", config, **kwargs)
    return drain(start(agent, input))


def test_evaluate_and_return_compute_from_inputs_and_previous_output(ws):
    execution = run_workflow(
        ws,
        {
            "main": [
                {"evaluate": {"doubled": "$ inputs['n'] * 2"}},
                {"evaluate": {"plus_one": "$ _['doubled'] + 1", "first": "$ steps[0].output"}},
                {"return": {"result": "$ _['plus_one']", "first": "$ _['first']"}},
            ]
        },
        {"n": 4},
    )
    assert execution.status == "completed"
    assert execution.output == {"result": 9, "first": {"doubled": 8}}
    assert steps(execution) == ["main[0]", "main[1]", "main[2]"]


def test_if_else_takes_the_branch_the_condition_picks(ws):
    config = {
        "main": [
            {
                "if": "inputs['n'] > 10",
                "then": {"evaluate": {"size": "'big'"}},
                "else": [
                    {"evaluate": {"size": "'small'"}},
                    {"evaluate": {"size": "_['size'] + '!'"}},
                ],
            }
        ]
    }
    agent = make_agent(ws, "branchy", "workflow", config)
    big = drain(start(agent, {"n": 11}))
    small = drain(start(agent, {"n": 1}))
    assert big.output == {"size": "big"}
    assert small.output == {"size": "small!"}
    assert steps(small) == ["main[0].else[0]", "main[0].else[1]", "main[0]"]


def test_switch_falls_through_to_the_default_case(ws):
    config = {
        "main": [
            {
                "switch": [
                    {"case": "$ inputs['color'] == 'red'", "then": {"evaluate": {"v": "'stop'"}}},
                    {"case": "_", "then": {"evaluate": {"v": "'go'"}}},
                ]
            }
        ]
    }
    agent = make_agent(ws, "lights", "workflow", config)
    assert drain(start(agent, {"color": "red"})).output == {"v": "stop"}
    assert drain(start(agent, {"color": "green"})).output == {"v": "go"}


def test_foreach_map_reduce_and_parallel(ws):
    execution = run_workflow(
        ws,
        {
            "main": [
                {"foreach": {"in": "$ inputs['xs']", "do": {"evaluate": {"sq": "$ _ * _"}}}},
                {
                    "over": "$ inputs['xs']",
                    "map": {"evaluate": {"v": "$ _ + 1"}},
                    "reduce": "$ results + [_['v']]",
                    "parallelism": 2,
                },
                {"map": {"in": "$ inputs['xs']", "do": {"evaluate": {"neg": "$ -_"}}}},
                {"parallel": [{"evaluate": {"a": "1"}}, {"evaluate": {"b": "2"}}]},
                {
                    "return": {
                        "squares": "$ [r['sq'] for r in steps[0].output]",
                        "incremented": "$ steps[1].output",
                        "negated": "$ steps[2].output",
                        "both": "$ _",
                    }
                },
            ]
        },
        {"xs": [1, 2, 3]},
    )
    assert execution.status == "completed", execution.error
    assert execution.output == {
        "squares": [1, 4, 9],
        "incremented": [2, 3, 4],
        "negated": [{"neg": -1}, {"neg": -2}, {"neg": -3}],
        "both": [{"a": 1}, {"b": 2}],
    }


def test_set_get_and_log_pass_the_previous_output_through(ws):
    execution = run_workflow(
        ws,
        {
            "main": [
                {"evaluate": {"x": "5"}},
                {"set": {"saved": "$ _['x'] * 10"}},
                {"log": "saved {{ state['saved'] }}"},
                {"evaluate": {"still": "$ _['x']"}},
                {"get": "saved"},
            ]
        },
    )
    assert execution.status == "completed"
    assert execution.output == 50
    log = execution.transitions.get(step_path="main[2]")
    assert log.message == "saved 50"
    assert execution.transitions.get(step_path="main[3]").output == {"still": 5}


def test_an_error_step_fails_the_execution_with_its_message(ws):
    execution = run_workflow(
        ws, {"main": [{"error": "no stock for {{ inputs['sku'] }}"}]}, {"sku": "X1"}
    )
    assert execution.status == "failed"
    assert execution.error == "no stock for X1"


def test_a_bad_expression_at_run_time_fails_with_a_readable_error(ws):
    execution = run_workflow(ws, {"main": [{"evaluate": {"v": "$ inputs['missing']"}}]})
    assert execution.status == "failed"
    assert "missing" in execution.error and "expression" in execution.error


def test_a_forbidden_construct_is_refused_when_the_version_is_created(ws):
    agent = services.agent_create(workspace=ws, name="bad", type="workflow")
    with pytest.raises(ValidationFailed) as caught:
        services.agent_version_create(
            agent=agent, config={"main": [{"evaluate": {"v": "$ ().__class__"}}]}
        )
    assert "config.main[0].evaluate.v" in str(caught.value.details)
    with pytest.raises(ValidationFailed) as caught:
        services.agent_version_create(agent=agent, config={"main": [{"tool": "rm_rf"}]})
    assert "no tool named 'rm_rf'" in str(caught.value.details)


def test_wait_for_input_parks_and_resume_continues_with_the_input(ws, owner):
    agent = make_agent(
        ws,
        "asker",
        "workflow",
        {
            "main": [
                {"wait_for_input": {"info": {"question": "Which size?"}}},
                {"return": {"size": "$ _['size']"}},
            ]
        },
    )
    execution = drain(start(agent))
    assert execution.status == "awaiting_input"
    assert execution.state["waiting"]["path"] == "main[0]"
    assert execution.lease_owner == ""
    services.execution_resume(execution=execution, input={"size": "XL"}, actor=owner_actor(owner))
    execution = drain(execution)
    assert execution.status == "completed"
    assert execution.output == {"size": "XL"}
    assert execution.transitions.get(step_path="main[0]", type="step").output == {"size": "XL"}


def owner_actor(member):
    from executions.lifecycle import Actor

    return Actor.for_user(member.user)


def test_a_short_sleep_runs_inline_and_a_long_one_parks_without_a_lease(ws):
    agent = make_agent(
        ws,
        "sleepy",
        "workflow",
        {
            "main": [
                {"evaluate": {"v": "1"}},
                {"sleep": {"seconds": 0.01}},
                {"sleep": {"minutes": 5}},
                {"return": {"v": "$ _['v']"}},
            ]
        },
    )
    execution = drain(start(agent))
    assert execution.status == "running"
    assert execution.lease_owner == ""
    assert execution.state["parked"]["kind"] == "sleep"
    assert "main[2]" not in steps(execution)
    # The timer is a task with run_after; pretend it is due.
    past = (timezone.now() - timedelta(seconds=1)).isoformat()
    Execution.objects.filter(pk=execution.pk).update(
        state={**execution.state, "sleeps": {"main[2]": past}}
    )
    runner.run(execution.pk)
    execution.refresh_from_db()
    assert execution.status == "completed"
    assert execution.output == {"v": 1}
    assert steps(execution) == ["main[0]", "main[1]", "main[2]", "main[3]"]


def test_yield_runs_a_sub_workflow_as_a_child_and_resumes_the_parent(ws):
    agent = make_agent(
        ws,
        "parent",
        "workflow",
        {
            "main": [
                {"evaluate": {"n": "$ inputs['n']"}},
                {"yield": {"workflow": "double", "arguments": {"n": "$ _['n']"}}},
                {"workflow": "double", "arguments": {"n": "$ _['n']"}},  # Julep's flat form
                {"return": {"result": "$ _['n']"}},
            ],
            "double": [{"evaluate": {"n": "$ inputs['n'] * 2"}}],
        },
    )
    execution = drain(start(agent, {"n": 3}))
    assert execution.status == "completed", execution.error
    assert execution.output == {"result": 12}
    children = list(execution.children.order_by("created_at"))
    assert [c.status for c in children] == ["completed", "completed"]
    assert [c.input for c in children] == [{"n": 3}, {"n": 6}]
    assert children[0].metadata["workflow"] == "double"


def test_a_failed_child_fails_the_parent_naming_the_child(ws):
    agent = make_agent(
        ws,
        "parent2",
        "workflow",
        {"main": [{"yield": {"workflow": "boom"}}], "boom": [{"error": "kaboom"}]},
    )
    execution = drain(start(agent))
    assert execution.status == "failed"
    assert "kaboom" in execution.error and "child execution" in execution.error


APPROVAL_FLOW = {
    "main": [
        {"evaluate": {"amount": "$ inputs['amount']"}},
        {
            "approval": {
                "title": "Pay {{ _['amount'] }}?",
                "payload": {"amount": "$ _['amount']"},
                "allowed_actions": ["approve", "reject", "edit"],
            }
        },
        {"return": {"paid": "$ _['amount']"}},
    ]
}


def test_an_approval_step_parks_and_an_edited_approval_continues_with_the_edit(ws):
    from approvals.models import Approval

    agent = make_agent(ws, "payer", "workflow", APPROVAL_FLOW)
    execution = drain(start(agent, {"amount": 500}))
    assert execution.status == "awaiting_approval"
    approval = Approval.objects.get(execution=execution)
    assert approval.title == "Pay 500?"
    assert approval.payload == {"amount": 500}
    assert approval.step_path == "main[1]"
    assert approval.reject_ends is True
    decide(execution, approve=True, payload={"amount": 300})
    execution = drain(execution)
    assert execution.status == "completed"
    assert execution.output == {"paid": 300}


def test_a_rejected_approval_without_a_branch_ends_rejected(ws):
    agent = make_agent(ws, "payer", "workflow", APPROVAL_FLOW)
    execution = drain(start(agent, {"amount": 500}))
    decide(execution, approve=False, reason="too much")
    execution = drain(execution)
    assert execution.status == "rejected"


def test_a_rejected_approval_with_on_reject_runs_that_branch(ws):
    from approvals.models import Approval

    config = {
        "main": [
            {
                "approval": {
                    "title": "Ship it?",
                    "on_reject": [{"evaluate": {"shipped": "False", "why": "$ _['reason']"}}],
                }
            }
        ]
    }
    agent = make_agent(ws, "shipper", "workflow", config)
    execution = drain(start(agent))
    assert Approval.objects.get(execution=execution).reject_ends is False
    decide(execution, approve=False, reason="not today")
    execution = drain(execution)
    assert execution.status == "completed"
    assert execution.output == {"shipped": False, "why": "not today"}


def test_tool_and_prompt_steps_record_calls_and_usage(ws):
    DemoOrder.objects.create(workspace=ws, order_id="O-1", customer="Kim", total=50)
    execution = run_workflow(
        ws,
        {
            "model": {"provider": "builtin", "script": ["The order is fine."]},
            "main": [
                {"tool": "order_lookup", "arguments": {"order_id": "$ inputs['id']"}},
                {"prompt": "Summarise {{ _['customer'] }}'s order.", "unwrap": True},
                {"prompt": [{"role": "user", "content": "again"}]},
                {"return": {"text": "$ steps[1].output", "full": "$ _.choices[0].message.content"}},
            ],
        },
        {"id": "O-1"},
    )
    assert execution.status == "completed", execution.error
    # Each prompt starts a new conversation, so both get the script's first reply.
    assert execution.output == {"text": "The order is fine.", "full": "The order is fine."}
    assert execution.token_usage["total_tokens"] > 0
    prompt = execution.transitions.get(step_path="main[1]")
    assert prompt.usage["total_tokens"] > 0
    assert prompt.input["model"]["simulated"] is True
    assert execution.cost == 0  # the builtin model is free; a known price of zero


def test_a_prompt_step_with_tools_runs_the_tool_loop(ws):
    execution = run_workflow(
        ws,
        {
            "model": {
                "provider": "builtin",
                "script": [
                    {"tool_calls": [{"name": "calculator", "arguments": {"expression": "6*7"}}]},
                    "It is {tool_results}",
                ],
            },
            "main": [
                {
                    "prompt": "What is 6*7?",
                    "tools": ["calculator"],
                    "auto_run_tools": True,
                    "unwrap": True,
                }
            ],
        },
    )
    assert execution.status == "completed", execution.error
    assert "42" in execution.output
    assert steps(execution) == ["main[0].llm[0]", "main[0].tool[0][0]", "main[0].llm[1]", "main[0]"]


def test_a_rerun_replays_recorded_steps_without_repeating_tool_side_effects(ws):
    order = DemoOrder.objects.create(workspace=ws, order_id="O-9", total=100)
    agent = make_agent(
        ws,
        "refunder",
        "workflow",
        {
            "main": [
                {"tool": "order_refund", "arguments": {"order_id": "O-9", "amount": 10}},
                {"wait_for_input": {"info": {"q": "ok?"}}},
                {"tool": "order_refund", "arguments": {"order_id": "O-9", "amount": 5}},
            ]
        },
    )
    execution = drain(start(agent))
    assert execution.status == "awaiting_input"
    from executions.lifecycle import SYSTEM

    services.execution_resume(execution=execution, input={}, actor=SYSTEM)
    # Two re-runs (e.g. a duplicate task): the first refund is replayed, never repeated.
    execution = drain(execution)
    runner.run(execution.pk)
    order.refresh_from_db()
    assert execution.status == "completed"
    assert order.refund_count == 2
    assert float(order.refunded) == 15.0
    assert steps(execution) == ["main[0]", "main[1]", "main[2]"]


def test_output_is_checked_against_the_output_schema(ws):
    execution = run_workflow(
        ws,
        {"main": [{"return": {"n": "'not a number'"}}]},
        output_schema={"type": "object", "properties": {"n": {"type": "integer"}}},
    )
    assert execution.status == "failed"
    assert "output_schema" in execution.error and "output.n" in execution.error


def test_max_steps_budget_fails_naming_the_budget(ws):
    execution = run_workflow(
        ws,
        {
            "limits": {"max_steps": 2},
            "main": [{"evaluate": {"a": "1"}}, {"evaluate": {"b": "2"}}, {"evaluate": {"c": "3"}}],
        },
    )
    assert execution.status == "failed"
    assert execution.error.startswith("budget exceeded: max_steps (2)")


def test_a_cancelled_execution_stops_between_steps(ws, owner):
    from executions.engine import context

    agent = make_agent(
        ws,
        "slow",
        "workflow",
        # The first step is a short sleep, recorded at once: a pure first step would be held
        # back until the next write and dropped with the cancel (docs/decisions.md, "Engine").
        {
            "main": [
                {"sleep": {"seconds": 0.01}},
                {"sleep": {"seconds": 0.4}},
                {"evaluate": {"b": "2"}},
            ]
        },
    )
    execution = start(agent)
    original = context.RunContext.check
    cancelled = []

    def cancel_once(self, **kwargs):
        # Someone presses cancel while the first step has just been recorded.
        if self.steps_done == 1 and not cancelled:
            cancelled.append(True)
            services.execution_cancel(
                execution=Execution.objects.get(pk=self.execution.pk), actor=owner_actor(owner)
            )
        return original(self, **kwargs)

    context.RunContext.check = cancel_once
    try:
        runner.run(execution.pk)
    finally:
        context.RunContext.check = original
    execution.refresh_from_db()
    assert execution.status == "cancelled"
    assert steps(execution) == ["main[0]"]
    assert execution.lease_owner == ""
