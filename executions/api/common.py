"""Helpers every native router uses: role checks, the `{"data": …}` reply, optional bodies and
the error responses each operation documents."""

from __future__ import annotations

import json
from typing import Any

import orjson
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError

from executions.api.schemas import ErrorOut
from executions.errors import BadRequest, Forbidden, ValidationFailed, field_error
from executions.models import Role, role_at_least
from executions.selectors import Page
from executions.validation import clean_json

# Every operation can answer these: malformed input, a missing/revoked key, a field that fails
# validation, the key's rate limit.
COMMON_ERRORS = (400, 401, 422, 429)
# Writes add: the key's role is too low, the body is too large, the object's state forbids it.
WRITE_ERRORS = (403, 409, 413)


def replies(ok: dict[int, Any], *errors: int) -> dict[int, Any]:
    """`response=` for an operation: its success shape(s) plus the error body for each code."""
    return {**ok, **{code: ErrorOut for code in sorted({*COMMON_ERRORS, *errors})}}


def require(request: HttpRequest, role: str) -> None:
    """Refuse a key whose role is below `role` (viewers read; reviewers run and decide)."""
    if not role_at_least(request.role, role):
        raise Forbidden(f"this API key's role ({request.role}) cannot do this; it needs {role}")


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:
        # orjson refuses integers beyond 64 bits (JSON input may hold them); the standard
        # encoder writes them, as it did before orjson.
        return json.dumps(value, cls=DjangoJSONEncoder).encode()


def json_reply(body: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(dumps(body), status=status, content_type="application/json")


def data(value: Any, status: int = 200) -> HttpResponse:
    return json_reply({"data": value}, status=status)


def page_out(page: Page, shape) -> HttpResponse:
    return json_reply({"data": [shape(item) for item in page.items], "meta": page.meta()})


def optional_body(request: HttpRequest) -> dict[str, Any]:
    """A body that may be absent or `{}` (cancel, approve, deny); malformed JSON is still a 400,
    and keys or values no database can store are a 422 naming the field."""
    if not request.body or not request.body.strip():
        return {}
    try:
        value = json.loads(request.body)
    except UnicodeDecodeError:
        raise BadRequest(
            "request body is not valid UTF-8 JSON", code="malformed_json", details={"field": "body"}
        ) from None
    if not isinstance(value, dict):
        raise BadRequest("request body must be a JSON object", details={"field": "body"})
    return clean_json(value, field="")


def optional_input(request: HttpRequest, schema: type[BaseModel]) -> BaseModel:
    """Parse an optional body with `schema`; errors name each field, like ninja's own."""
    try:
        return schema.model_validate(optional_body(request))
    except PydanticError as exc:
        details = [
            field_error(".".join(str(p) for p in e["loc"]) or "body", e["msg"])
            for e in exc.errors()
        ]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        raise ValidationFailed(f"invalid request: {summary}", details=details) from None


def checked_body(request: HttpRequest, schema: type[BaseModel]) -> dict[str, Any]:
    """The optional body as sent (services refuse unknown keys themselves), after `schema`
    has checked the fields it knows (lengths, NUL, types)."""
    optional_input(request, schema)
    return optional_body(request)


def body_doc(schema: type[BaseModel], *, required: bool = False) -> dict[str, Any]:
    """`openapi_extra` for an operation that reads its (optional) body itself."""
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": schema.model_json_schema()}},
        }
    }


ADMIN, REVIEWER = Role.ADMIN, Role.REVIEWER
