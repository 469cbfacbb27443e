"""Validate an agent version's definition when it is created, so a bad one is a 422 naming the
field and step instead of a crash at run time."""

from __future__ import annotations

from typing import Any

from executions.engine import checkpoints, expressions, tools
from executions.errors import ValidationFailed, field_error

# Julep's step kinds (seed 004 / the julep SDK's task types), plus our `approval`.
STEP_KINDS = {
    "evaluate",
    "prompt",
    "tool",
    "if",
    "switch",
    "foreach",
    "map",
    "parallel",
    "wait_for_input",
    "sleep",
    "log",
    "set",
    "get",
    "return",
    "error",
    "yield",
    "approval",
}
# Keys that may sit beside a step's kind key.
STEP_EXTRAS = {
    "if": {"then", "else", "label"},
    "tool": {"arguments", "label"},
    "prompt": {
        "tools",
        "auto_run_tools",
        "settings",
        "unwrap",
        "label",
        "model",
        "tool_choice",
        "disable_cache",
    },
    # `over` is Julep's flat map_reduce: {"over": expr, "map": step, "reduce": expr}.
    "map": {"reduce", "initial", "parallelism", "label", "over"},
    "foreach": {"label"},
    "yield": {"arguments", "label"},
}
PROVIDERS = {"builtin", "openai", "anthropic"}
CONFIG_TYPE_KEYS = {"type"}  # PromptRails' WorkflowAgentConfig/PromptAgentConfig send "type"


def validate(agent_type: str, config: dict[str, Any]) -> dict[str, Any]:
    """Return the normalised config or raise ValidationFailed listing every problem."""
    if not isinstance(config, dict):
        raise ValidationFailed("config must be an object", details=[field_error("config", "")])
    errors: list[dict[str, str]] = []
    if agent_type == "workflow":
        _workflow(config, errors)
    elif agent_type == "agent":
        _agent(config, errors)
    errors.extend(_limits(config))
    if errors:
        summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:5])
        raise ValidationFailed(f"invalid definition: {summary}", details=errors)
    return config


def _workflow(config: dict[str, Any], errors: list) -> None:
    main = config.get("main")
    if not isinstance(main, list) or not main:
        errors.append(field_error("config.main", "must be a non-empty list of steps"))
        return
    workflows = {"main": main}
    for name, steps in config.items():
        if name in {
            "main",
            "tools",
            "model",
            "limits",
            "budgets",
            "input_schema",
            "name",
            "description",
            "type",
            "system_prompt",
            "approval_policy",
            "run_budget",
            "model_config",
            "inherit_tools",
            "metadata",
        }:
            continue
        if isinstance(steps, list):
            workflows[name] = steps
    for name, steps in workflows.items():
        _steps(steps, f"config.{name}", errors, set(workflows))
    _tools(config.get("tools"), "config.tools", errors)
    _model(config.get("model"), "config.model", errors)


def _steps(steps: Any, where: str, errors: list, workflows: set[str]) -> None:
    if not isinstance(steps, list):
        errors.append(field_error(where, "must be a list of steps"))
        return
    for i, step in enumerate(steps):
        _step(step, f"{where}[{i}]", errors, workflows)


def _step(step: Any, where: str, errors: list, workflows: set[str]) -> None:
    if not isinstance(step, dict):
        errors.append(field_error(where, "a step must be an object"))
        return
    kinds = [k for k in step if k in STEP_KINDS]
    if not kinds and "workflow" in step:
        # Julep's flat yield: {"workflow": name, "arguments": {...}}.
        step = {"yield": {k: v for k, v in step.items() if k != "label"}}
        kinds = ["yield"]
    if len(kinds) != 1:
        known = ", ".join(sorted(STEP_KINDS))
        errors.append(
            field_error(
                where,
                f"a step needs exactly one kind key (one of {known}); got "
                f"{', '.join(step) or 'none'}",
            )
        )
        return
    kind = kinds[0]
    allowed = {kind} | STEP_EXTRAS.get(kind, {"label"})
    for key in step:
        if key not in allowed:
            errors.append(field_error(f"{where}.{key}", f"unknown key for a {kind} step"))
    value = step[kind]
    here = f"{where}.{kind}"
    if kind == "if":
        errors.extend(expressions.check_all(_as_expr(value), where=here))
        if "then" not in step:
            errors.append(field_error(f"{where}.then", "an if step needs a then branch"))
        for branch in ("then", "else"):
            if branch in step:
                _branch(step[branch], f"{where}.{branch}", errors, workflows)
    elif kind == "switch":
        if not isinstance(value, list) or not value:
            errors.append(field_error(here, "must be a list of {case, then}"))
            return
        for j, case in enumerate(value):
            if not isinstance(case, dict) or "case" not in case or "then" not in case:
                errors.append(field_error(f"{here}[{j}]", "each case needs case and then"))
                continue
            if case["case"] != "_":
                errors.extend(
                    expressions.check_all(_as_expr(case["case"]), where=f"{here}[{j}].case")
                )
            _branch(case["then"], f"{here}[{j}].then", errors, workflows)
    elif kind == "map" and "over" in step:
        errors.extend(expressions.check_all(_as_expr(step["over"]), where=f"{where}.over"))
        _branch(value, here, errors, workflows)
        if "reduce" in step:
            errors.extend(expressions.check_all(_as_expr(step["reduce"]), where=f"{where}.reduce"))
    elif kind in {"foreach", "map"}:
        if (
            not isinstance(value, dict)
            or "in" not in value
            or ("do" not in value and kind == "foreach")
        ):
            need = "in and do" if kind == "foreach" else "in and a step (do or over)"
            errors.append(field_error(here, f"needs {need}"))
            return
        errors.extend(expressions.check_all(_as_expr(value["in"]), where=f"{here}.in"))
        if "do" in value:
            _branch(value["do"], f"{here}.do", errors, workflows)
        if kind == "map" and "reduce" in step:
            errors.extend(expressions.check_all(_as_expr(step["reduce"]), where=f"{where}.reduce"))
    elif kind == "parallel":
        if not isinstance(value, list) or not value:
            errors.append(field_error(here, "must be a non-empty list of steps"))
            return
        for j, sub in enumerate(value):
            _branch(sub, f"{here}[{j}]", errors, workflows)
    elif kind == "yield":
        if not isinstance(value, dict) or "workflow" not in value:
            errors.append(field_error(here, "needs workflow (the name of a sub-workflow)"))
            return
        if value["workflow"] not in workflows:
            errors.append(
                field_error(f"{here}.workflow", f"no workflow named {value['workflow']!r}")
            )
        errors.extend(expressions.check_all(value.get("arguments", {}), where=f"{here}.arguments"))
    elif kind == "tool":
        if not isinstance(value, str) or not value:
            errors.append(field_error(here, "must be the name of a tool"))
        elif value not in _tool_names():
            errors.append(field_error(here, f"no tool named {value!r}"))
        errors.extend(expressions.check_all(step.get("arguments", {}), where=f"{where}.arguments"))
    elif kind == "prompt":
        if not isinstance(value, (str, list)):
            errors.append(field_error(here, "must be a string or a list of messages"))
        errors.extend(expressions.check_all(value, where=here))
        if "model" in step:
            _model(step["model"], f"{where}.model", errors)
    elif kind == "sleep":
        if not isinstance(value, dict) or not any(
            k in value for k in ("seconds", "minutes", "hours", "days")
        ):
            errors.append(field_error(here, "needs seconds, minutes, hours or days"))
    elif kind == "wait_for_input":
        if not isinstance(value, dict):
            errors.append(field_error(here, "must be an object (info, optional schema)"))
    elif kind == "approval":
        if not isinstance(value, dict) or not value.get("title"):
            errors.append(field_error(f"{here}.title", "an approval step needs a title"))
        else:
            errors.extend(expressions.check_all(value, where=here))
            errors.extend(_approval_spec(value, here))
            for branch in ("on_reject", "on_approve"):
                if branch in value:
                    _branch(value[branch], f"{here}.{branch}", errors, workflows)
    elif kind in EXPRESSION_MAPS and isinstance(value, dict):
        errors.extend(expressions.check_all(as_expressions(value), where=here))
    else:
        errors.extend(expressions.check_all(value, where=here))


def _approval_spec(spec: dict[str, Any], where: str) -> list[dict[str, str]]:
    """The approvals app's own reading of the spec, so a bad timeout, assignee or schema is a
    422 when the version is created rather than a failed run later."""
    literal = {k: v for k, v in spec.items() if not expressions.is_expression(v)}
    literal.setdefault("title", "title")
    return checkpoints.spec_errors(literal, prefix=where)


# Steps whose values are expressions with or without the leading `$` (as in Julep).
EXPRESSION_MAPS = {"evaluate", "set", "return"}


def as_expressions(value: dict[str, Any]) -> dict[str, Any]:
    return {k: _as_expr(v) for k, v in value.items()}


def _branch(value: Any, where: str, errors: list, workflows: set[str]) -> None:
    if isinstance(value, list):
        _steps(value, where, errors, workflows)
    else:
        _step(value, where, errors, workflows)


def _as_expr(value: Any) -> Any:
    """`if` / `case` / `in` take an expression with or without the leading `$`."""
    if isinstance(value, str) and not expressions.is_expression(value):
        return f"$ {value}"
    return value


def _agent(config: dict[str, Any], errors: list) -> None:
    _model(config.get("model"), "config.model", errors)
    prompt = config.get("system_prompt", config.get("instructions", ""))
    if not isinstance(prompt, (str, list)):
        errors.append(field_error("config.system_prompt", "must be a string"))
    _tools(config.get("tools"), "config.tools", errors)


def _model(model: Any, where: str, errors: list) -> None:
    if model is None or isinstance(model, str):
        return
    if not isinstance(model, dict):
        errors.append(field_error(where, "must be a model name or an object"))
        return
    provider = model.get("provider", "builtin")
    if provider not in PROVIDERS:
        errors.append(
            field_error(f"{where}.provider", f"must be one of {', '.join(sorted(PROVIDERS))}")
        )
    script = model.get("script")
    if script is not None and not isinstance(script, list):
        errors.append(field_error(f"{where}.script", "must be a list of replies"))


def _tools(tools: Any, where: str, errors: list) -> None:
    if tools is None:
        return
    if not isinstance(tools, list):
        errors.append(field_error(where, "must be a list"))
        return
    known = _tool_names()
    for i, tool in enumerate(tools):
        if isinstance(tool, str):
            name = tool
        elif isinstance(tool, dict) and (tool.get("name") or tool.get("mcp_tool_id")):
            # Tools the client declares itself (Julep function/integration definitions,
            # PromptRails MCP tools) are not in our registry; only bare names must be ours.
            declared = tool.get("type") or tool.get("function") or tool.get("mcp_tool_id")
            name = None if declared else tool.get("name")
        else:
            errors.append(field_error(f"{where}[{i}]", "a tool needs a name"))
            continue
        if name and name not in known:
            errors.append(
                field_error(f"{where}[{i}]", f"no tool named {name!r} (known: {', '.join(known)})")
            )


def _tool_names() -> list[str]:
    return tools.names()


def _limits(config: dict[str, Any]) -> list[dict[str, str]]:
    errors = []
    limits = config.get("limits") or {}
    if not isinstance(limits, dict):
        return [field_error("config.limits", "must be an object")]
    for key in ("max_steps", "max_tokens", "timeout_seconds", "step_timeout_seconds"):
        if key in limits and (not isinstance(limits[key], (int, float)) or limits[key] <= 0):
            errors.append(field_error(f"config.limits.{key}", "must be a positive number"))
    if "max_cost_usd" in limits and (
        not isinstance(limits["max_cost_usd"], (int, float)) or limits["max_cost_usd"] < 0
    ):
        errors.append(field_error("config.limits.max_cost_usd", "must be a non-negative number"))
    return errors
