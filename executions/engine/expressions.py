"""`$ expr` expressions in workflows, evaluated with simpleeval (never `eval`).

Names available: `_` (previous step's output), `inputs`, `steps` (list of {input, output}),
`state` (values set with `set`), plus any loop variables. A few safe builtins are added.
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

from simpleeval import DEFAULT_FUNCTIONS, EvalWithCompoundTypes

FUNCTIONS = {
    **DEFAULT_FUNCTIONS,
    "len": len,
    "min": min,
    "max": max,
    "sum": sum,
    "abs": abs,
    "round": round,
    "sorted": sorted,
    "any": any,
    "all": all,
    "range": range,
    "list": list,
    "dict": dict,
    "set": set,
    "tuple": tuple,
    "zip": zip,
    "enumerate": enumerate,
    "bool": bool,
    "str": str,
    "int": int,
    "float": float,
    "json_dumps": json.dumps,
    "json_loads": json.loads,
    "floor": math.floor,
    "ceil": math.ceil,
}

_TEMPLATE = re.compile(r"\{\{(.+?)\}\}")


class ExpressionError(Exception):
    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{message} in expression {source!r}")


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip().startswith("$")


def body(source: str) -> str:
    return source.lstrip()[1:].strip()


def check(source: str) -> None:
    """Refuse, before anything runs, an expression simpleeval would refuse at run time."""
    text = body(source) if is_expression(source) else source
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ExpressionError(text, f"syntax error: {exc.msg}") from None
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            raise ExpressionError(text, f"access to private attribute {node.attr!r} is forbidden")
        if isinstance(node, ast.Name) and node.id.startswith("__"):
            raise ExpressionError(text, f"name {node.id!r} is forbidden")
        if isinstance(node, (ast.Lambda, ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)):
            raise ExpressionError(text, f"{type(node).__name__} is not allowed")
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id not in FUNCTIONS
        ):
            raise ExpressionError(text, f"unknown function {node.func.id!r}")


def evaluate(source: str, names: dict[str, Any]) -> Any:
    text = body(source) if is_expression(source) else source
    evaluator = EvalWithCompoundTypes(names=names, functions=FUNCTIONS)
    try:
        return evaluator.eval(text)
    except Exception as exc:  # simpleeval raises many kinds; all mean "this expression failed"
        raise ExpressionError(text, f"{type(exc).__name__}: {exc}") from None


def render(value: Any, names: dict[str, Any]) -> Any:
    """Evaluate `$ expr` strings and `{{ expr }}` templates anywhere inside a JSON-like value."""
    if is_expression(value):
        return evaluate(value, names)
    if isinstance(value, str) and "{{" in value:
        return _TEMPLATE.sub(lambda m: _to_text(evaluate(m.group(1).strip(), names)), value)
    if isinstance(value, dict):
        return {k: render(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, names) for v in value]
    return value


def check_all(value: Any, *, where: str) -> list[dict[str, str]]:
    """Every bad expression inside a value, as field errors."""
    errors: list[dict[str, str]] = []
    if is_expression(value):
        try:
            check(value)
        except ExpressionError as exc:
            errors.append({"field": where, "message": str(exc)})
    elif isinstance(value, str) and "{{" in value:
        for match in _TEMPLATE.finditer(value):
            try:
                check(match.group(1).strip())
            except ExpressionError as exc:
                errors.append({"field": where, "message": str(exc)})
    elif isinstance(value, dict):
        for k, v in value.items():
            errors.extend(check_all(v, where=f"{where}.{k}"))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            errors.extend(check_all(v, where=f"{where}[{i}]"))
    return errors


def _to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)
