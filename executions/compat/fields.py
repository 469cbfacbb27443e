"""Field types of the faces' schemas: the checks of executions.validation (no NUL, no lone
surrogates, a column's length, numbers a database keeps), plus a JSON Schema that says the
same, so the OpenAPI documents tell a client (and schemathesis) what is accepted.

JSON values are described by one recursive component, `StorableJson`, which FaceAPI adds to
each face's document.
"""

from __future__ import annotations

from typing import Annotated, Any

from ninja import NinjaAPI
from pydantic import AfterValidator, WithJsonSchema

from executions.validation import BIGINT_MAX, SafeJson, SafeStr, SafeText

# Text a database stores: no NUL. (Nor unpaired surrogates, which are refused too; the
# documents leave them out of the patterns because schema validators reject surrogate ranges in
# an ECMA-262 regex, and no JSON text generator produces them unasked.)
STORABLE = r"^[^\x00]*$"
# The same, with at least one character that is not blank (names).
NAMED = r"^[^\x00]*[^\s\x00][^\x00]*$"
JSON_REF = {"$ref": "#/components/schemas/StorableJson"}
# What the field types carry instead of JSON_REF: pydantic resolves every $ref it meets against
# its own definitions, so the reference is put in when FaceAPI writes the document.
PLACEHOLDER = {"x-storable-json": True}
STORABLE_JSON = {
    "description": "any JSON value without NUL or unpaired surrogates in its strings or keys, "
    f"and numbers within ±{BIGINT_MAX}",
    "anyOf": [
        {"type": "null"},
        {"type": "boolean"},
        {"type": "number", "minimum": -BIGINT_MAX, "maximum": BIGINT_MAX},
        {"type": "string", "pattern": STORABLE},
        {"type": "array", "items": JSON_REF},
        {
            "type": "object",
            "patternProperties": {STORABLE: JSON_REF},
            "additionalProperties": False,
        },
    ],
}


def Text(max_length: int | None = None, *, named: bool = False) -> Any:  # noqa: N802 - a type
    """A string for a text column (at most `max_length` characters); `named`: not blank."""
    schema: dict[str, Any] = {"type": "string", "pattern": NAMED if named else STORABLE}
    if max_length is not None:
        schema["maxLength"] = max_length
    if named:
        schema["minLength"] = 1
    base = SafeStr(max_length) if max_length is not None else SafeText
    if named:  # what the document promises is what is checked: not empty, not blank
        return Annotated[base, AfterValidator(_not_blank), WithJsonSchema(schema)]
    return Annotated[base, WithJsonSchema(schema)]


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def _bounded(value: Any) -> Any:
    """Numbers beyond a bigint are refused, floats too: the documents promise one range."""
    if isinstance(value, dict):
        for item in value.values():
            _bounded(item)
    elif isinstance(value, list):
        for item in value:
            _bounded(item)
    elif (
        isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) > BIGINT_MAX
    ):
        raise ValueError(f"numbers must be within ±{BIGINT_MAX}")
    return value


Json = Annotated[SafeJson, AfterValidator(_bounded), WithJsonSchema(PLACEHOLDER)]
"""Any storable JSON value."""

JsonObject = Annotated[
    dict[SafeStr(200), Json],
    WithJsonSchema(
        {
            "type": "object",
            "propertyNames": {"maxLength": 200},
            "patternProperties": {STORABLE: PLACEHOLDER},
            "additionalProperties": False,
        }
    ),
]
"""A JSON object with storable keys (at most 200 characters) and values."""


class FaceAPI(NinjaAPI):
    """A face's NinjaAPI: its OpenAPI document carries the StorableJson component."""

    def get_openapi_schema(self, *args: Any, **kwargs: Any) -> Any:
        schema = _with_refs(super().get_openapi_schema(*args, **kwargs))
        schema.setdefault("components", {}).setdefault("schemas", {})["StorableJson"] = (
            STORABLE_JSON
        )
        return schema


def _with_refs(node: Any) -> Any:
    if isinstance(node, dict):
        if node.get("x-storable-json") is True:
            return dict(JSON_REF)
        for key, value in node.items():
            node[key] = _with_refs(value)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            node[i] = _with_refs(value)
    return node
