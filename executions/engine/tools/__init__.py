"""Tools: Python callables with JSON-Schema parameters, registered by name.

A version lists the tools it may use (`tools: ["calculator", {"name": "order_refund",
"requires_approval": true}]`). Arguments are validated against the schema before the call; a
validation error or an exception inside the tool becomes the tool's result (`{"error": …}`),
which is recorded and shown to the model rather than failing the execution.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from jsonschema import Draft202012Validator


@dataclass(frozen=True)
class Tool:
    name: str
    fn: Callable[..., Any]
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    requires_approval: bool = False

    def spec(self) -> dict[str, Any]:
        """What the model is shown."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}


@dataclass
class ToolContext:
    """What a tool may know about the call: the execution it runs for (its workspace)."""

    execution: Any
    path: str = ""

    @property
    def workspace_id(self) -> Any:
        return self.execution.workspace_id


REGISTRY: dict[str, Tool] = {}


def tool(
    name: str,
    *,
    description: str = "",
    parameters: dict[str, Any] | None = None,
    requires_approval: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        REGISTRY[name] = Tool(
            name=name,
            fn=fn,
            description=description or (fn.__doc__ or "").strip().split("\n")[0],
            parameters=parameters or {"type": "object", "properties": {}},
            requires_approval=requires_approval,
        )
        return fn

    return register


def _load_builtins() -> None:
    from executions.engine.tools import builtin  # noqa: F401 - registers on import


def get(name: str) -> Tool | None:
    _load_builtins()
    return REGISTRY.get(name)


def names() -> list[str]:
    _load_builtins()
    return sorted(REGISTRY)


def resolve(entries: Any, *, approval_policy: Any = None) -> dict[str, Tool]:
    """The tools a version allows, by name, with its overrides applied.

    Raises KeyError naming an unknown tool (the definition check turns it into a 422).
    """
    _load_builtins()
    needs_approval = set()
    if isinstance(approval_policy, dict):
        needs_approval = set(approval_policy.get("tools") or [])
    resolved: dict[str, Tool] = {}
    for entry in entries or []:
        if isinstance(entry, str):
            name, overrides = entry, {}
        elif isinstance(entry, dict):
            function = entry.get("function") if isinstance(entry.get("function"), dict) else {}
            ref = entry.get("ref") if isinstance(entry.get("ref"), dict) else {}
            name = entry.get("name") or function.get("name") or ref.get("name")
            overrides = entry
        else:
            continue
        base = REGISTRY.get(name)
        if base is None:
            if isinstance(entry, dict) and (
                entry.get("type") or function or entry.get("mcp_tool_id")
            ):
                continue  # declared by the client, not runnable here; the model is not offered it
            raise KeyError(name)
        changes: dict[str, Any] = {}
        if "requires_approval" in overrides:
            changes["requires_approval"] = bool(overrides["requires_approval"])
        if overrides.get("description"):
            changes["description"] = overrides["description"]
        if name in needs_approval:
            changes["requires_approval"] = True
        resolved[name] = replace(base, **changes) if changes else base
    return resolved


def validate_arguments(tool: Tool, arguments: Any) -> str | None:
    """A readable message when the arguments do not fit the tool's schema, else None."""
    if not isinstance(arguments, dict):
        return "arguments must be a JSON object"
    if "__unparsed__" in arguments:
        return f"arguments are not valid JSON: {arguments['__unparsed__']!r}"
    errors = sorted(
        Draft202012Validator(tool.parameters or {}).iter_errors(arguments),
        key=lambda e: list(map(str, e.path)),
    )
    if not errors:
        return None
    parts = []
    for error in errors[:5]:
        where = ".".join(str(p) for p in error.path) or "arguments"
        parts.append(f"{where}: {error.message}")
    return "invalid arguments: " + "; ".join(parts)


def invoke(tool: Tool, context: ToolContext, arguments: dict[str, Any]) -> Any:
    """Validate and call; every failure becomes an `{"error": …}` result."""
    problem = validate_arguments(tool, arguments)
    if problem:
        return {"error": problem}
    try:
        return tool.fn(context, **arguments)
    except Exception as exc:  # noqa: BLE001 - a tool error is shown to the model, not raised
        return {"error": f"{type(exc).__name__}: {exc}"}


def summary(result: Any, limit: int = 120) -> str:
    text = result if isinstance(result, str) else json.dumps(result, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
