"""Checks for input that would otherwise reach the database and fail there (a 500) or be
truncated: NUL characters and lone surrogates in text, strings over a column's length,
integers beyond the column's range, NaN/Infinity, ids that are not UUIDs.

One helper for every face. Each check raises `ValidationFailed` (422) naming the field, before
anything is written. The `Annotated` types at the bottom plug the same checks into django-ninja
/ pydantic schemas, so a schema field declared `SafeText` or `SafeJson` is checked while the
request is parsed and the error comes back in the API's error body with the field's name.
"""

from __future__ import annotations

import math
import uuid
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from ninja import Schema
from pydantic import AfterValidator, BaseModel, BeforeValidator, StringConstraints, model_validator

from executions.errors import ValidationFailed, field_error

# PostgreSQL integer / bigint ranges: a larger number fails in the database, not in Python.
INT_MAX = 2**31 - 1
BIGINT_MAX = 2**63 - 1
# Bounds for JSON documents (input, metadata, config): nesting deeper than this is refused
# before it reaches Python's recursive encoders.
JSON_MAX_DEPTH = 64


def _fail(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", details=[field_error(field, message)])


def text_problem(value: str, *, max_length: int | None = None) -> str | None:
    """Why `value` cannot be stored in a text column, or None when it can."""
    if "\x00" in value:
        return "must not contain NUL (\\u0000) characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain unpaired surrogates (invalid Unicode)"
    if max_length is not None and len(value) > max_length:
        return f"must be at most {max_length} characters"
    return None


def clean_text(value: Any, *, field: str, max_length: int | None = None) -> Any:
    """Return `value` unchanged if it is storable text (or not a string); raise otherwise."""
    if isinstance(value, str) and (problem := text_problem(value, max_length=max_length)):
        raise _fail(field, problem)
    return value


def json_problem(value: Any, *, field: str, depth: int = 0) -> tuple[str, str] | None:
    """The first (field, message) in a JSON value that no database can store, or None.

    Keys and string values: no NUL (PostgreSQL jsonb refuses \\u0000), no lone surrogates.
    Numbers: finite only (NaN is not JSON), integers within what jsonb and our encoders keep.
    """
    if depth > JSON_MAX_DEPTH:
        return field, f"is nested deeper than {JSON_MAX_DEPTH} levels"
    if isinstance(value, str):
        problem = text_problem(value)
        return (field, problem) if problem else None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return None if -BIGINT_MAX - 1 <= value <= BIGINT_MAX else (field, "integer is too large")
    if isinstance(value, float):
        return None if math.isfinite(value) else (field, "must be a finite number")
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{field}.{key}" if field else str(key)
            if isinstance(key, str) and (problem := text_problem(key)):
                return name, f"key {problem}"
            if found := json_problem(item, field=name, depth=depth + 1):
                return found
        return None
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            if found := json_problem(item, field=f"{field}[{i}]", depth=depth + 1):
                return found
        return None
    return None


def clean_json(value: Any, *, field: str) -> Any:
    if found := json_problem(value, field=field):
        raise _fail(*found)
    return value


def clean_int(
    value: Any, *, field: str, minimum: int = 1, maximum: int = INT_MAX, default: int | None = None
) -> int | None:
    """An integer query/form value within [minimum, maximum] (a column's range)."""
    if value in (None, ""):
        return default
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise _fail(field, "must be an integer") from None
    if not minimum <= number <= maximum:
        raise _fail(field, f"must be between {minimum} and {maximum}")
    return number


def clean_decimal(value: Any, *, field: str) -> Decimal | None:
    """A finite decimal (NaN and Infinity compare with nothing and break SQL)."""
    if value in (None, ""):
        return None
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise _fail(field, "must be a number") from None
    if not number.is_finite():
        raise _fail(field, "must be a finite number")
    if abs(number) >= Decimal(10) ** 14:
        raise _fail(field, "is out of range")
    return number


def clean_uuid(value: Any, *, field: str) -> uuid.UUID | None:
    if value in (None, ""):
        return None
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        raise _fail(field, "must be a UUID") from None


def clean_params(params: Any, *, fields: dict[str, int | None] | None = None) -> None:
    """Check every query parameter (names and values) for NUL / surrogates, and the ones in
    `fields` for their maximum length."""
    fields = fields or {}
    for key in params:
        clean_text(key, field="query")
        values = params.getlist(key) if hasattr(params, "getlist") else [params[key]]
        for value in values:
            clean_text(value, field=key, max_length=fields.get(key))


# --- pydantic / django-ninja types -------------------------------------------------------------


def _pydantic_text(max_length: int | None):
    def check(value: str) -> str:
        if problem := text_problem(value, max_length=max_length):
            raise ValueError(problem)
        return value

    return AfterValidator(check)


def _pydantic_json(value: Any) -> Any:
    if found := json_problem(value, field=""):
        where, problem = found
        raise ValueError(f"{where}: {problem}" if where else problem)
    return value


def _reject_huge_ints(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > BIGINT_MAX:
        raise ValueError("integer is too large")
    return value


SafeText = Annotated[str, _pydantic_text(None)]
"""A string for a TextField: no NUL, no lone surrogates."""


def SafeStr(max_length: int, min_length: int = 0) -> Any:  # noqa: N802 - a type: SafeStr(200)
    """A string for a CharField(max_length=…); the bounds appear in the OpenAPI document."""
    return Annotated[
        str, StringConstraints(min_length=min_length, max_length=max_length), _pydantic_text(None)
    ]


SafeJson = Annotated[Any, AfterValidator(_pydantic_json)]
"""Any JSON value that both SQLite and PostgreSQL jsonb can store."""

SafeInt = Annotated[int, BeforeValidator(_reject_huge_ints)]
SafeObject = Annotated[dict[str, Any], AfterValidator(_pydantic_json)]
SafeList = Annotated[list[Any], AfterValidator(_pydantic_json)]


class BodyIn(Schema):
    """Base of request-body schemas: the body must be a JSON object. (ninja's Schema reads
    attributes off any value, so a list or a string body would otherwise validate as an object
    with every field left out.)"""

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, value: Any) -> Any:
        if not isinstance(getattr(value, "_obj", value), (dict, BaseModel)):  # DjangoGetter
            raise ValueError("request body must be a JSON object")
        return value
