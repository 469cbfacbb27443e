"""Runs inside the Julep 0.3.9 SDK's own virtual environment (not the project's): drives the SDK
against a live Steward and prints what it returned as one JSON document.

    python julep_v0_driver.py <sync|async> <phase> '<json arguments>'

Phases: `flow` (agent, task, list, get, start, poll to the end), `gated` (a task whose tool
needs approval: start it and poll until it parks), `finish` (poll an execution to the end).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from julep import AsyncClient, Client

DONE = {"succeeded", "failed", "cancelled"}
SUM_THEN_DOUBLE = [
    {"evaluate": {"total": "inputs['a'] + inputs['b']"}},
    {"tool_id": "calculator", "arguments": {"expression": "$ str(_['total']) + ' * 2'"}},
    {"evaluate": {"doubled": "_['result']"}},
]
NUMBERS = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
}


def dump(value: Any) -> Any:
    """What the SDK returned, with the class it returned it as."""
    if isinstance(value, list):
        return [dump(v) for v in value]
    return {"__class__": type(value).__name__, **value.dict()}


async def run(mode: str, phase: str, args: dict[str, Any]) -> dict[str, Any]:
    client = (AsyncClient if mode == "async" else Client)(
        api_key=args["key"], base_url=args["base_url"]
    )

    async def call(value: Any) -> Any:
        return await value if mode == "async" else value

    async def poll(task_id: str, execution_id: str, until: set[str]) -> list[Any]:
        deadline = time.monotonic() + 30
        while True:
            found = await call(client.tasks.get_task_execution(task_id, execution_id))
            if found[0].status in until or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.1)

    if phase == "flow":
        agent = await call(
            client.agents.create(name=f"adder-{mode}", about="adds", model="gpt-4o-mini")
        )
        task = await call(
            client.tasks.create(
                agent_id=agent.id,
                name="sum then double",
                description=None,
                tools_available=["calculator"],
                input_schema=NUMBERS,
                main=SUM_THEN_DOUBLE,
            )
        )
        listed = await call(client.tasks.list(agent.id))
        got = await call(client.tasks.get(agent.id, task.id))
        started = await call(
            client.tasks.start_task_execution(
                agent_id=agent.id, task_id=task.id, arguments={"a": 2, "b": 3}, status="queued"
            )
        )
        final = await poll(task.id, started.id, DONE)
        return {
            "agent": dump(agent),
            "task": dump(task),
            "listed": dump(listed),
            "got": dump(got),
            "started": dump(started),
            "final": dump(final),
        }
    if phase == "gated":
        task = await call(
            client.tasks.create(
                agent_id=args["agent_id"],
                name="double with a reviewer",
                tools_available=["calculator"],
                main=[
                    {
                        "tool_id": "calculator",
                        "arguments": {"expression": "$ str(inputs['x']) + ' * 2'"},
                    }
                ],
            )
        )
        started = await call(
            client.tasks.start_task_execution(
                agent_id=args["agent_id"], task_id=task.id, arguments={"x": 21}, status="queued"
            )
        )
        parked = await poll(task.id, started.id, DONE | {"awaiting_input"})
        return {"task": dump(task), "started": dump(started), "parked": dump(parked)}
    if phase == "finish":
        return {"final": dump(await poll(args["task_id"], args["execution_id"], DONE))}
    raise SystemExit(f"unknown phase {phase!r}")


if __name__ == "__main__":
    mode, phase, raw = sys.argv[1:4]
    print(json.dumps(asyncio.run(run(mode, phase, json.loads(raw))), default=str))
