"""What the compat faces share: key auth, error translation, and small SSE/paging helpers.

Each face (Julep, Moderately, Discuro) renders errors in its platform's own body; the errors
themselves come from the same services and selectors the native API calls.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.core.serializers.json import DjangoJSONEncoder
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import HttpBearer
from pydantic import BaseModel
from pydantic import ValidationError as PydanticError

from executions import selectors
from executions.auth import ApiKeyAuth
from executions.errors import Forbidden, StewardError, ValidationFailed, field_error
from executions.lifecycle import IllegalTransition
from executions.live.follow import follow
from executions.models import role_at_least
from executions.validation import clean_json, clean_params

# Heartbeat comments keep proxies and SDK read timeouts (Julep: 120 s) from closing a quiet stream.
HEARTBEAT_SECONDS = 15.0
# A stream is closed after this long even if the execution has not finished; clients reconnect.
STREAM_MAX_SECONDS = 600.0


@dataclass
class Problem:
    """One error, before a face renders it in its platform's shape."""

    status: int
    message: str
    code: str
    details: Any = None
    # Validation problems keep their per-field list: [{"field", "message"}].
    fields: list[dict[str, Any]] | None = None


Renderer = Callable[[HttpRequest, Problem], HttpResponse]


def reply(body: Any, status: int = 200) -> HttpResponse:
    """A JSON answer, encoded with orjson (the faces' reads share the native API's hot path)."""
    try:
        content = orjson.dumps(body)
    except TypeError:  # integers beyond 64 bits, which orjson refuses and JSON input may hold
        content = json.dumps(body, cls=DjangoJSONEncoder).encode()
    return HttpResponse(content, status=status, content_type="application/json")


def require(request: HttpRequest, role: str) -> None:
    """Refuse a key whose role is below `role` (viewers read; reviewers run and decide)."""
    if not role_at_least(request.role, role):
        raise Forbidden(f"this API key's role ({request.role}) cannot do this; it needs {role}")


def authenticate(request: HttpRequest) -> str | None:
    """Authenticate an API key the native way (X-API-Key or Authorization: Bearer).

    Sets request.workspace / role / actor and returns None, or returns the problem message.
    """
    key = ApiKeyAuth()(request)
    if key is None:
        return getattr(request, "auth_problem", None) or "missing or invalid API key"
    return None


class BearerAuth(HttpBearer):
    """`Authorization: Bearer <key>`, which every face's SDK sends, and the one scheme the
    faces' OpenAPI documents declare. The check itself is the native one, which also takes
    `X-API-Key`; declaring both as alternatives made a request that dropped one of them look
    like "authentication ignored" to a fuzzer while the other still carried the key."""

    def __call__(self, request: HttpRequest) -> Any:
        return ApiKeyAuth()(request)

    def authenticate(self, request: HttpRequest, token: str) -> Any:  # pragma: no cover
        return None


AUTH = [BearerAuth()]


def install_error_handlers(api: NinjaAPI, render: Renderer) -> None:
    """Route every error a face can raise through the face's own renderer."""

    def on_domain(request: HttpRequest, exc: StewardError) -> HttpResponse:
        details = exc.details if isinstance(exc, ValidationFailed) else None
        fields = [f for f in details if isinstance(f, dict)] if isinstance(details, list) else None
        return render(request, Problem(exc.status, exc.message, exc.code, exc.details, fields))

    def on_illegal(request: HttpRequest, exc: IllegalTransition) -> HttpResponse:
        return render(
            request,
            Problem(409, str(exc), "invalid_status", {"status": exc.current, "requested": exc.to}),
        )

    def on_auth(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        message = getattr(request, "auth_problem", None) or "missing or invalid API key"
        return render(request, Problem(401, message, "unauthorized"))

    def on_validation(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        fields = []
        malformed = False
        for error in exc.errors:
            loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "payload", "query")]
            if error.get("type") in {"json_invalid", "model_attributes_type"} and not loc:
                malformed = True
            fields.append(field_error(".".join(loc) or "body", error.get("msg", "invalid")))
        if malformed:
            return render(
                request, Problem(400, "request body is not a valid JSON object", "malformed_json")
            )
        summary = "; ".join(f"{f['field']}: {f['message']}" for f in fields[:5])
        return render(
            request,
            Problem(422, f"invalid request: {summary}", "validation_error", fields, fields),
        )

    def on_http(request: HttpRequest, exc: HttpError) -> HttpResponse:
        if exc.status_code == 400 and "parse request body" in str(exc):
            return render(
                request, Problem(400, f"request body is not valid JSON: {exc}", "malformed_json")
            )
        return render(request, Problem(exc.status_code, str(exc), "http_error"))

    def on_bad_json(request: HttpRequest, exc: Exception) -> HttpResponse:
        return render(
            request, Problem(400, f"request body is not valid JSON: {exc}", "malformed_json")
        )

    def on_too_big(request: HttpRequest, exc: Exception) -> HttpResponse:
        return render(
            request,
            Problem(
                413,
                f"request body is larger than {settings.MAX_REQUEST_BODY_BYTES} bytes",
                "payload_too_large",
            ),
        )

    api.add_exception_handler(StewardError, on_domain)
    api.add_exception_handler(IllegalTransition, on_illegal)
    api.add_exception_handler(AuthenticationError, on_auth)
    api.add_exception_handler(ValidationError, on_validation)
    api.add_exception_handler(HttpError, on_http)
    api.add_exception_handler(json.JSONDecodeError, on_bad_json)
    api.add_exception_handler(UnicodeDecodeError, on_bad_json)  # a body that is not UTF-8
    api.add_exception_handler(RequestDataTooBig, on_too_big)


def face_urls(api: NinjaAPI, render: Renderer) -> tuple[list, str, str]:
    """`api.urls`, except that a method a path does not take is answered in the face's own
    body (ninja's is a bare text 405), with the same Allow header."""
    patterns, app_name, namespace = api.urls
    for pattern in patterns:
        pattern.callback = _json_not_allowed(pattern.callback, render)
    return patterns, app_name, namespace


def _json_not_allowed(view: Callable, render: Renderer) -> Callable:
    def fix(request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if response.status_code != 405 or response.get("Content-Type", "").endswith("json"):
            return response
        allowed = response.get("Allow", "")
        answer = render(
            request,
            Problem(405, f"{request.method} is not allowed here; use {allowed}", "not_allowed"),
        )
        answer["Allow"] = allowed
        return answer

    if iscoroutinefunction(view):

        async def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            return fix(request, await view(request, *args, **kwargs))

        markcoroutinefunction(wrapped)
    else:

        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            return fix(request, view(request, *args, **kwargs))

    wrapped.csrf_exempt = True  # ninja's views are; a face's error must not turn into CSRF's
    return wrapped


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request body as a JSON object; empty means {} (cancel calls send no body). Keys and
    values no database can store (NUL, lone surrogates, huge integers) are a 422 naming them."""
    if not request.body or not request.body.strip():
        return {}
    value = json.loads(request.body)
    if not isinstance(value, dict):
        raise ValidationFailed(
            "request body must be a JSON object",
            details=[field_error("body", "must be a JSON object")],
        )
    return clean_json(value, field="")


def parse_body(request: HttpRequest, schema: type[BaseModel]) -> Any:
    """An optional body (absent means {}) parsed by `schema`; each problem names its field."""
    try:
        return schema.model_validate(json_body(request))
    except PydanticError as exc:
        details = [
            field_error(".".join(str(p) for p in e["loc"]) or "body", e["msg"])
            for e in exc.errors()
        ]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
        raise ValidationFailed(f"invalid request: {summary}", details=details) from None


def metadata_filter(request: HttpRequest) -> dict[str, Any]:
    """Julep's `metadata_filter={"k": "v"}` (a JSON object) or `metadata_filter.k=v` (SDK 2.x),
    as {key: value}; every query parameter is checked for text no database can compare."""
    clean_params(request.GET, fields={"metadata_filter": 4000})
    wanted: dict[str, Any] = {}
    if raw := request.GET.get("metadata_filter"):
        wanted.update(
            clean_json(json_object(raw, field="metadata_filter"), field="metadata_filter")
        )
    for key in request.GET:
        if key.startswith("metadata_filter."):
            wanted[key[len("metadata_filter.") :]] = selectors.metadata_value(request.GET[key])
    return wanted


def json_object(raw: str, *, field: str) -> dict[str, Any]:
    """A query parameter that carries a JSON object."""
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        raise ValidationFailed(
            f"{field} must be a JSON object", details=[field_error(field, "must be a JSON object")]
        )
    return value


def int_param(params: Any, name: str, *, default: int, minimum: int, maximum: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValidationFailed(
            f"{name} must be an integer", details=[field_error(name, "must be an integer")]
        ) from None
    if not minimum <= value <= maximum:
        raise ValidationFailed(
            f"{name} must be between {minimum} and {maximum}",
            details=[field_error(name, f"must be between {minimum} and {maximum}")],
        )
    return value


def sse_frame(data: Any, *, event: str | None = None) -> str:
    """One SSE frame: LF line endings, the JSON on a single data line, a blank line after."""
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'), default=str)}\n\n"


def sse_response(frames: AsyncIterator[str]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(frames, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


async def poll(
    read: Callable[[], Awaitable[Any]],
    *,
    render: Callable[[Any], Awaitable[tuple[list[str], bool]]],
    max_seconds: float = STREAM_MAX_SECONDS,
) -> AsyncIterator[str]:
    """Yield what `render` makes of each `read()`, until it says done: the faces' streams
    follow an execution the one way every stream does (executions.live.follow)."""

    async def step() -> tuple[list[str], bool]:
        return await render(await read())

    async for frame in follow(
        step, max_seconds=max_seconds, keepalive=": ping\n\n", keepalive_seconds=HEARTBEAT_SECONDS
    ):
        yield frame
