"""The model ↔ tools loop shared by agents, prompt steps with tools, and Python agents.

Each model turn is recorded at `<prefix>.llm[n]` and each tool call at `<prefix>.tool[n][i]`;
the conversation is rebuilt from those records on a re-run, so a replayed loop makes exactly
the same messages without calling anything again.
"""

from __future__ import annotations

import json
from typing import Any

from executions.engine import expressions, providers
from executions.engine.context import BudgetExceeded, RunContext, StepFailed
from executions.engine.tools import Tool

DEFAULT_MAX_TURNS = 10


def run_agent(ctx: RunContext) -> Any:
    """An agent version: a model, a system prompt, tools, max_steps."""
    config = ctx.config
    model = providers.resolve(config.get("model") or config.get("model_config"))
    tools = ctx.tools(config.get("tools") or [])
    messages: list[dict[str, Any]] = []
    system = config.get("system_prompt") or config.get("instructions") or ""
    names = {"inputs": ctx.execution.input, "input": ctx.execution.input}
    if system:
        try:
            system = expressions.render(system, names)
        except expressions.ExpressionError as exc:
            raise StepFailed(f"system_prompt: {exc}") from None
        messages.append({"role": "system", "content": system})
    messages.extend(user_messages(ctx.execution.input))
    max_turns = int(config.get("max_steps") or DEFAULT_MAX_TURNS)
    final, _ = loop(
        ctx, prefix="agent", model=model, messages=messages, tools=tools, max_turns=max_turns
    )
    return shape_output(final.get("content", ""), ctx.output_schema)


def user_messages(input: Any) -> list[dict[str, Any]]:
    """The conversation an input starts: `messages`, or the first of message / question /
    prompt / query / text / name, or the whole input as JSON."""
    if isinstance(input, str):
        return [{"role": "user", "content": input}]
    if isinstance(input, dict):
        if isinstance(input.get("messages"), list):
            return [
                {"role": m.get("role", "user"), "content": m.get("content", "")}
                for m in input["messages"]
                if isinstance(m, dict)
            ]
        for key in ("message", "question", "prompt", "query", "text", "input"):
            if isinstance(input.get(key), str):
                return [{"role": "user", "content": input[key]}]
    return [{"role": "user", "content": json.dumps(input, default=str)}]


def shape_output(content: str, output_schema: Any) -> Any:
    """`{"response": text}`, or the parsed JSON when the version declares an output schema."""
    if output_schema:
        try:
            return json.loads(content)
        except (json.JSONDecodeError, TypeError):
            pass
    return {"response": content}


def loop(
    ctx: RunContext,
    *,
    prefix: str,
    model: providers.ModelConfig,
    messages: list[dict[str, Any]],
    tools: dict[str, Tool],
    max_turns: int,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Call the model and run the tools it asks for until it answers; (final output, messages)."""
    messages = list(messages)
    specs = [tool.spec() for tool in tools.values()]
    for turn in range(max_turns):
        out = ctx.llm(f"{prefix}.llm[{turn}]", model, messages, specs)
        messages.append(
            {
                "role": "assistant",
                "content": out.get("content", ""),
                "tool_calls": out.get("tool_calls") or [],
            }
        )
        calls = out.get("tool_calls") or []
        if not calls:
            return out, messages
        results = run_tool_calls(ctx, f"{prefix}.tool[{turn}]", calls, tools)
        for call, result in zip(calls, results, strict=True):
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": call.get("id", ""),
                    "name": call.get("name", ""),
                    "content": result
                    if isinstance(result, str)
                    else json.dumps(result, default=str),
                }
            )
    raise BudgetExceeded("max_steps", max_turns, "the model was still calling tools")


def run_tool_calls(
    ctx: RunContext, prefix: str, calls: list[dict[str, Any]], tools: dict[str, Tool]
) -> list[Any]:
    """Run one turn's tool calls: those needing no approval concurrently, then the gated ones
    one at a time (the engine parks on one approval at a time)."""
    results: list[Any] = [None] * len(calls)

    def runner(i: int):
        call = calls[i]
        return lambda: ctx.tool_call(
            f"{prefix}[{i}]",
            tools.get(call.get("name", "")),
            call.get("arguments") or {},
            call_id=call.get("id", ""),
            name=call.get("name", ""),
        )

    free = [
        i
        for i, c in enumerate(calls)
        if not getattr(tools.get(c.get("name", "")), "requires_approval", False)
    ]
    gated = [i for i in range(len(calls)) if i not in free]
    for i, value in zip(free, ctx.run_parallel([runner(i) for i in free]), strict=True):
        results[i] = value
    for i in gated:
        results[i] = runner(i)()
    return results
