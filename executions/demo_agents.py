"""Python agents shipped with the demo (listed in STEWARD_AGENT_MODULES)."""

from __future__ import annotations

from typing import Any

from executions.engine.python_agents import agent


@agent(
    "python-greeter",
    description="Greets someone by name, with an LLM-written line (a Python agent).",
    input_schema={
        "type": "object",
        "properties": {"name": {"type": "string", "minLength": 1}},
        "required": ["name"],
    },
)
def greeter(ctx: Any, input: dict[str, Any]) -> dict[str, Any]:
    name = input["name"]
    cleaned = ctx.step("normalise-name", lambda: name.strip().title())
    ctx.emit("content", {"content": f"Hello, {cleaned}! "})
    line = ctx.llm(f"Write one friendly sentence welcoming {cleaned}.")
    return {"greeting": f"Hello, {cleaned}!", "line": line}
