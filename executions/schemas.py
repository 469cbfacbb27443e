"""JSON Schema checks shared by versions (schemas), executions (input/output) and approvals."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from executions.errors import ValidationFailed, field_error


def _path(prefix: str, parts: Any) -> str:
    path = prefix
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or prefix


def check_schema(schema: Any, *, field: str) -> None:
    """Refuse a schema that is not itself valid JSON Schema (422 naming the field)."""
    if schema is None:
        return
    if not isinstance(schema, dict):
        raise ValidationFailed(
            f"{field} must be a JSON Schema object",
            details=[field_error(field, "must be a JSON Schema object")],
        )
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = _path(field, exc.path)
        raise ValidationFailed(
            f"{where}: {exc.message}", details=[field_error(where, exc.message)]
        ) from None


def violations(schema: Any, value: Any, *, prefix: str) -> list[dict[str, str]]:
    """Every violation of `schema` by `value`, each naming its field (e.g. input.amount)."""
    if not schema:
        return []
    validator = Draft202012Validator(schema)
    found = []
    for error in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.path))):
        path = list(error.path)
        if error.validator == "required" and isinstance(error.instance, dict):
            # Name the missing field itself (input.amount), not its parent object.
            missing = [p for p in error.validator_value if p not in error.instance]
            if len(missing) == 1:
                path.append(missing[0])
        found.append(field_error(_path(prefix, path), error.message))
    return found


def validate(schema: Any, value: Any, *, prefix: str, what: str) -> None:
    if found := violations(schema, value, prefix=prefix):
        summary = "; ".join(f"{v['field']}: {v['message']}" for v in found[:5])
        raise ValidationFailed(f"{what} does not match its schema: {summary}", details=found)
