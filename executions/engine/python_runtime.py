"""Runs Python agents (`@agent` functions) with a context whose calls are recorded and replayed.

The function runs from the top on every run; `ctx.llm`, `ctx.tool`, `ctx.approval`,
`ctx.step` and `ctx.emit` get step paths from their call order (`py.llm[0]`, `py.tool[1]`,
`py.step[fetch]`…), so a re-run returns the recorded results instead of repeating them. The
function must therefore be deterministic apart from those calls: do side effects in `ctx.step`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

from executions.engine import agent_loop, providers, python_agents
from executions.engine import tools as tool_registry
from executions.engine.context import ApprovalRejected, RunContext, StepFailed, jsonable
from executions.schemas import violations


def run(ctx: RunContext) -> Any:
    execution = ctx.execution
    name = (
        (ctx.config.get("python") or execution.agent.name) if ctx.config else execution.agent.name
    )
    registered = python_agents.get(name)
    if registered is None:
        raise StepFailed(f"no Python agent named {name!r} is registered in this worker")
    if execution.agent_version is None and registered.input_schema:
        found = violations(registered.input_schema, execution.input, prefix="input")
        if found:
            raise StepFailed(
                "input does not match the agent's input_schema: "
                + "; ".join(f"{v['field']}: {v['message']}" for v in found[:5])
            )
    if ctx.output_schema is None and registered.output_schema:
        ctx.output_schema = registered.output_schema
    agent_ctx = AgentContext(ctx, defaults=registered.config)
    return registered.fn(agent_ctx, execution.input)


class AgentContext:
    """What a Python agent function receives as `ctx`."""

    def __init__(self, run: RunContext, *, defaults: dict[str, Any] | None = None) -> None:
        self._run = run
        self._counters: dict[str, int] = defaultdict(int)
        self._defaults = defaults or {}
        self.execution_id = str(run.execution.pk)
        self.input = run.execution.input

    def _path(self, kind: str, name: str | None = None) -> str:
        key = f"{kind}:{name}" if name is not None else kind
        n = self._counters[key]
        self._counters[key] += 1
        if name is None:
            return f"py.{kind}[{n}]"
        return f"py.{kind}[{name}]" + (f"#{n + 1}" if n else "")

    def _model(self, override: Any) -> providers.ModelConfig:
        base = self._run.config.get("model") or self._defaults.get("model")
        return providers.resolve(base, override)

    def llm(
        self,
        prompt: str | None = None,
        *,
        messages: list[dict[str, Any]] | None = None,
        system: str | None = None,
        model: Any = None,
        tools: list[Any] | None = None,
        max_steps: int = agent_loop.DEFAULT_MAX_TURNS,
    ) -> str:
        """Ask the model; returns its text. With `tools`, runs the tool loop until it answers."""
        path = self._path("llm")
        conversation: list[dict[str, Any]] = []
        if system:
            conversation.append({"role": "system", "content": system})
        conversation.extend(messages or [])
        if prompt is not None:
            conversation.append({"role": "user", "content": prompt})
        config = self._model(model)
        if tools:
            done = self._run.replay(path)
            if done is not None:
                return done.output.get("content", "")
            final, _ = agent_loop.loop(
                self._run,
                prefix=path,
                model=config,
                messages=conversation,
                tools=self._run.tools(tools),
                max_turns=max_steps,
            )
            output = self._run.record(path, "llm", input={"messages": conversation}, output=final)
            return output.get("content", "")
        output = self._run.llm(path, config, conversation)
        return output.get("content", "")

    def tool(self, name: str, **arguments: Any) -> Any:
        """Call a registered tool (recorded; a tool that requires approval parks first)."""
        path = self._path("tool")
        tool = self._run.tools([name]).get(name) if tool_registry.get(name) else None
        return self._run.tool_call(path, tool, arguments, name=name)

    def approval(
        self,
        title: str,
        *,
        payload: Any = None,
        description: str = "",
        on_reject: str = "end",
        **spec: Any,
    ) -> Any:
        """Park until a reviewer decides; returns the approved (possibly edited) payload or the
        response. On reject the execution ends as rejected, or with on_reject="raise" this
        raises ApprovalRejected for the function to handle."""
        path = self._path("approval")
        spec = {"title": title, "description": description, **spec}
        if on_reject == "raise":
            spec["on_reject"] = True
        approved, value = self._run.approval(
            path, spec, payload, source="python", reject_ends=on_reject != "raise"
        )
        if not approved:
            raise ApprovalRejected(value or {})
        return value

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        """Run `fn` once: its (JSON) result is recorded and replayed on later runs."""
        path = self._path("step", name)
        return self._run.step(path, "step", lambda: jsonable(fn()))

    def emit(self, type: str, data: dict[str, Any] | None = None) -> None:
        """Send a streamed event (e.g. "content", "thinking") once, even across re-runs."""
        path = self._path("emit")
        if self._run.replay(path) is not None:
            return
        self._run.emit(type, data or {})
        self._run.record(path, "emit", input={"type": type}, output=data or {})
