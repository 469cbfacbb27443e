"""Workflows in Julep's task format: a `main` list of steps and named sub-workflows.

Each step has a path (`main[2]`, `main[3].then[0]`, `main[4].foreach[1]`…) that names it in
the history. Leaf steps are recorded when they finish; composite steps (if, switch, foreach,
map, parallel, prompt with a tool loop) are recorded once all their inner steps are, so a
re-run skips a finished composite whole and descends into an unfinished one, replaying its
recorded inner steps.

Expressions (`$ …` and `{{ … }}`) see `_` (the previous output in this list), `inputs`,
`steps` (this workflow's top-level steps so far, each {input, output}), `outputs`, and `state`
(values set with `set`). `log`, `set` and `sleep` pass `_` through unchanged.
"""

from __future__ import annotations

from typing import Any

from executions.engine import agent_loop, expressions, providers
from executions.engine.context import RunContext, StepFailed
from executions.engine.definition import STEP_KINDS, as_expressions
from executions.engine.records import StepResult

PASSTHROUGH = {"log", "set", "sleep"}


class Return(Exception):
    def __init__(self, value: Any) -> None:
        super().__init__("return")
        self.value = value


def run(ctx: RunContext) -> Any:
    execution = ctx.execution
    name = "main"
    if execution.parent_id is not None:
        name = (execution.metadata or {}).get("workflow") or "main"
    steps = ctx.config.get(name)
    if not isinstance(steps, list):
        raise StepFailed(f"the definition has no workflow named {name!r}")
    frame = Frame(ctx, inputs=execution.input)
    try:
        return frame.run_list(steps, name, execution.input, top=True)
    except Return as done:
        return done.value


def step_kind(step: dict[str, Any]) -> str:
    if "over" in step and "map" in step:
        return "map"
    if "workflow" in step and not any(key in STEP_KINDS for key in step):
        return "yield"  # Julep's flat form
    for key in step:
        if key in STEP_KINDS:
            return key
    raise StepFailed(f"a step has no kind: {sorted(step)}")


class Frame:
    def __init__(self, ctx: RunContext, *, inputs: Any) -> None:
        self.ctx = ctx
        self.inputs = inputs
        self.history: list[dict[str, Any]] = []
        self.state: dict[str, Any] = {}

    def names(self, prev: Any, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        names = {
            "_": prev,
            "inputs": self.inputs,
            "input": self.inputs,
            "steps": self.history,
            "outputs": [h["output"] for h in self.history],
            "state": self.state,
        }
        if extra:
            names.update(extra)
        return names

    def render(self, value: Any, prev: Any, extra: dict | None = None) -> Any:
        try:
            return expressions.render(value, self.names(prev, extra))
        except expressions.ExpressionError as exc:
            raise StepFailed(str(exc)) from None

    def evaluate(self, source: Any, prev: Any, extra: dict | None = None) -> Any:
        if not isinstance(source, str):
            return source
        text = source if expressions.is_expression(source) else f"$ {source}"
        return self.render(text, prev, extra)

    def run_list(self, steps: list, path: str, prev: Any, *, top: bool = False) -> Any:
        for i, step in enumerate(steps):
            out = self.run_step(step, f"{path}[{i}]", prev)
            if top:
                self.history.append({"input": prev, "output": out})
            prev = out
        return prev

    def run_branch(self, branch: Any, path: str, prev: Any) -> Any:
        if isinstance(branch, list):
            return self.run_list(branch, path, prev)
        return self.run_step(branch, f"{path}[0]", prev)

    # --- one step -----------------------------------------------------------------------------

    def run_step(self, step: dict[str, Any], path: str, prev: Any) -> Any:
        kind = step_kind(step)
        handler = getattr(self, f"step_{kind}")
        return handler(step, path, prev)

    def _composite(self, path: str, kind: str, fn, *, input: Any = None) -> Any:
        """A step made of steps: skip it whole once recorded, otherwise run and record it."""
        done = self.ctx.replay(path)
        if done is not None:
            return done.output
        output = fn()
        return self.ctx.record(path, kind, input=input, output=output)

    def step_evaluate(self, step: dict, path: str, prev: Any) -> Any:
        return self.ctx.step(path, "evaluate", lambda: self.render(_exprs(step["evaluate"]), prev))

    def step_log(self, step: dict, path: str, prev: Any) -> Any:
        def log() -> Any:
            message = self.render(step["log"], prev)
            text = message if isinstance(message, str) else str(message)
            return StepResult(output={"log": text}, message=text)

        self.ctx.step(path, "log", log)
        return prev

    def step_set(self, step: dict, path: str, prev: Any) -> Any:
        values = self.ctx.step(path, "set", lambda: self.render(_exprs(step["set"]), prev))
        if isinstance(values, dict):
            self.state.update(values)
        return prev

    def step_get(self, step: dict, path: str, prev: Any) -> Any:
        key = step["get"]
        return self.ctx.step(path, "get", lambda: self.state.get(key), input={"key": key})

    def step_return(self, step: dict, path: str, prev: Any) -> Any:
        value = self.ctx.step(path, "return", lambda: self.render(_exprs(step["return"]), prev))
        raise Return(value)

    def step_error(self, step: dict, path: str, prev: Any) -> Any:
        message = self.ctx.step(path, "error", lambda: self.render(step["error"], prev))
        raise StepFailed(message if isinstance(message, str) else str(message))

    def step_sleep(self, step: dict, path: str, prev: Any) -> Any:
        spec = step["sleep"]
        seconds = float(spec.get("seconds", 0) or 0)
        seconds += float(spec.get("minutes", 0) or 0) * 60
        seconds += float(spec.get("hours", 0) or 0) * 3600
        seconds += float(spec.get("days", 0) or 0) * 86400
        return self.ctx.sleep(path, seconds, prev)

    def step_wait_for_input(self, step: dict, path: str, prev: Any) -> Any:
        spec = step["wait_for_input"] or {}
        info = self.render(spec.get("info", spec), prev)
        return self.ctx.wait_for_input(path, info, spec.get("schema"))

    def step_tool(self, step: dict, path: str, prev: Any) -> Any:
        name = step["tool"]
        if self.ctx.replay(path) is not None:
            return self.ctx.replay(path).output
        raw = step.get("arguments", {})
        arguments = prev if raw == "_" else self.render(raw, prev)
        allowed = self.ctx.tools(self.ctx.config.get("tools") or [name])
        tool = allowed.get(name) or self.ctx.tools([name]).get(name)
        return self.ctx.tool_call(path, tool, arguments, name=name)

    def step_prompt(self, step: dict, path: str, prev: Any) -> Any:
        done = self.ctx.replay(path)
        if done is not None:
            return _shape(done.output, step)
        value = self.render(step["prompt"], prev)
        messages = _messages(value)
        system = self.ctx.config.get("system_prompt")
        if system and not any(m.get("role") == "system" for m in messages):
            messages.insert(0, {"role": "system", "content": self.render(system, prev)})
        model = providers.resolve(
            self.ctx.config.get("model") or self.ctx.config.get("model_config"),
            step.get("model"),
            step.get("settings"),
        )
        tool_names = step.get("tools")
        if tool_names == "all":
            tool_names = self.ctx.config.get("tools") or []
        tools = self.ctx.tools(tool_names or [])
        # Julep's default: tool calls are returned, not run, unless auto_run_tools is set.
        if tools and step.get("auto_run_tools", False):
            max_turns = int((step.get("settings") or {}).get("max_steps") or 10)
            final, _ = agent_loop.loop(
                self.ctx,
                prefix=path,
                model=model,
                messages=messages,
                tools=tools,
                max_turns=max_turns,
            )
            output = self.ctx.record(path, "prompt", input={"messages": messages}, output=final)
        else:
            specs = [t.spec() for t in tools.values()]
            output = self.ctx.llm(path, model, messages, specs, kind="prompt")
        return _shape(output, step)

    def step_if(self, step: dict, path: str, prev: Any) -> Any:
        def run() -> Any:
            if self.evaluate(step["if"], prev):
                return self.run_branch(step["then"], f"{path}.then", prev)
            if "else" in step:
                return self.run_branch(step["else"], f"{path}.else", prev)
            return prev

        return self._composite(path, "if", run)

    def step_switch(self, step: dict, path: str, prev: Any) -> Any:
        def run() -> Any:
            for j, case in enumerate(step["switch"]):
                if case["case"] == "_" or self.evaluate(case["case"], prev):
                    return self.run_branch(case["then"], f"{path}.switch[{j}]", prev)
            return prev

        return self._composite(path, "switch", run)

    def step_foreach(self, step: dict, path: str, prev: Any) -> Any:
        spec = step["foreach"]

        def run() -> Any:
            items = self._items(spec["in"], prev, path)
            return [
                self.run_branch(spec["do"], f"{path}.foreach[{k}]", item)
                for k, item in enumerate(items)
            ]

        return self._composite(path, "foreach", run)

    def step_map(self, step: dict, path: str, prev: Any) -> Any:
        # Two shapes: ours `map: {in, do}` and Julep's `over: expr` + `map: step`.
        spec = step["map"]
        if "over" in step:
            source, body = step["over"], spec
        else:
            source, body = spec["in"], spec.get("do") or spec.get("over")
        parallelism = step.get("parallelism")

        def run() -> Any:
            items = self._items(source, prev, path)
            fns = [
                (lambda k=k, item=item: self.run_branch(body, f"{path}.map[{k}]", item))
                for k, item in enumerate(items)
            ]
            results = self.ctx.run_parallel(fns, int(parallelism) if parallelism else 1)
            if "reduce" not in step:
                return results
            acc = self.render(step.get("initial", []), prev)
            for result in results:
                acc = self.evaluate(step["reduce"], result, {"results": acc, "result": result})
            return acc

        return self._composite(path, "map", run)

    def step_parallel(self, step: dict, path: str, prev: Any) -> Any:
        branches = step["parallel"]

        def run() -> Any:
            fns = [
                (lambda j=j, b=b: self.run_branch(b, f"{path}.parallel[{j}]", prev))
                for j, b in enumerate(branches)
            ]
            return self.ctx.run_parallel(fns)

        return self._composite(path, "parallel", run)

    def step_yield(self, step: dict, path: str, prev: Any) -> Any:
        spec = step.get("yield") or step
        if self.ctx.replay(path) is not None:
            return self.ctx.replay(path).output
        raw = spec.get("arguments", {})
        arguments = prev if raw == "_" else self.render(raw, prev)
        return self.ctx.child(path, workflow=spec["workflow"], arguments=arguments)

    def step_approval(self, step: dict, path: str, prev: Any) -> Any:
        spec = dict(step["approval"])
        branches = {k: spec.pop(k) for k in ("on_reject", "on_approve") if k in spec}
        rendered = self.render(spec, prev)
        payload = rendered.pop("payload", prev)
        if "on_reject" in branches:
            rendered["on_reject"] = True
        approved, value = self.ctx.approval(
            path, rendered, payload, source="step", reject_ends="on_reject" not in branches
        )
        if approved:
            if "on_approve" in branches:
                return self.run_branch(branches["on_approve"], f"{path}.on_approve", value)
            return value
        if "on_reject" in branches:
            return self.run_branch(branches["on_reject"], f"{path}.on_reject", value)
        raise StepFailed(f"the approval at {path} was rejected")

    def _items(self, source: Any, prev: Any, path: str) -> list:
        items = self.evaluate(source, prev)
        if isinstance(items, dict):
            items = list(items.items())
        if not isinstance(items, (list, tuple, str)):
            raise StepFailed(f"{path}: `in` must give a list, got {type(items).__name__}")
        return list(items)


def _exprs(value: Any) -> Any:
    return as_expressions(value) if isinstance(value, dict) else value


def _messages(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, list):
        messages = []
        for item in value:
            if isinstance(item, dict):
                messages.append(
                    {"role": item.get("role", "user"), "content": item.get("content", "")}
                )
            else:
                messages.append({"role": "user", "content": str(item)})
        return messages
    return [{"role": "user", "content": str(value)}]


def _shape(output: dict[str, Any], step: dict[str, Any]) -> Any:
    """A prompt step's value: the text when `unwrap`, else an OpenAI-like response so both
    `_.content` and `_.choices[0].message.content` work."""
    if step.get("unwrap"):
        return output.get("content", "")
    message = {
        "role": "assistant",
        "content": output.get("content", ""),
        "tool_calls": output.get("tool_calls") or [],
    }
    return {
        **message,
        "choices": [{"index": 0, "message": message, "finish_reason": output.get("finish_reason")}],
        "model": output.get("model"),
    }
