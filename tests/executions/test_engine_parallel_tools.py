"""Parallel tool calls of one turn, on threads with their own connections (outside a test
transaction, on the file SQLite or PostgreSQL): a tool that writes to the database and a tool
that finishes first must not wait on each other's locks."""

from __future__ import annotations

import time

import pytest

from executions.engine import runner
from executions.engine import tools as tool_registry
from executions.models import DemoOrder, Execution

from .engine_helpers import make_agent, start, steps

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def writing_tools():
    """`slow_writer` writes a row, then keeps its transaction open a while (a tool doing more
    work after its write); `quick` returns while it does, so its end is recorded first."""
    tool_registry.get("calculator")  # the built-ins load first, so the restore keeps them
    before = dict(tool_registry.REGISTRY)

    @tool_registry.tool("slow_writer", parameters={"type": "object", "properties": {}})
    def slow_writer(ctx):
        DemoOrder.objects.create(
            workspace_id=ctx.workspace_id, order_id="W-1", customer="Writer", total=1
        )
        time.sleep(0.6)
        return {"written": "W-1"}

    @tool_registry.tool("quick", parameters={"type": "object", "properties": {}})
    def quick(ctx):
        time.sleep(0.1)
        return {"quick": True}

    yield
    tool_registry.REGISTRY.clear()
    tool_registry.REGISTRY.update(before)


def test_a_writing_tool_and_a_faster_one_in_the_same_turn_both_finish(workspace, writing_tools):
    agent = make_agent(
        workspace,
        "writer",
        "agent",
        {
            "model": {
                "provider": "builtin",
                "script": [
                    {
                        "tool_calls": [
                            {"name": "slow_writer", "arguments": {}},
                            {"name": "quick", "arguments": {}},
                        ]
                    },
                    "Both done.",
                ],
            },
            "tools": ["slow_writer", "quick"],
        },
    )
    execution = start(agent, {"question": "write"})
    runner.run(execution.pk)

    execution = Execution.objects.get(pk=execution.pk)
    assert execution.status == "completed", execution.error
    # Recorded in either order: on PostgreSQL `quick` ends first, on SQLite the two take turns.
    assert sorted(steps(execution)) == [
        "agent.llm[0]",
        "agent.llm[1]",
        "agent.tool[0][0]",
        "agent.tool[0][1]",
    ]
    assert DemoOrder.objects.filter(order_id="W-1").count() == 1
    tool_ends = list(
        execution.events.filter(type="tool_end").order_by("pk").values_list("data", flat=True)
    )
    assert sorted(e["name"] for e in tool_ends) == ["quick", "slow_writer"]
