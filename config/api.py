"""The native JSON API (`/api/v1`): one NinjaAPI, key auth, the uniform error body."""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError

from approvals.api import router as approvals_router
from approvals.api import webhooks_router
from executions.api import agents, executions, links, streams, workspace
from executions.auth import ApiKeyAuth
from executions.errors import StewardError
from executions.lifecycle import IllegalTransition

logger = logging.getLogger("steward.api")


def error_response(status: int, message: str, code: str, details=None) -> JsonResponse:
    body = {"error": message, "code": code}
    if details is not None:
        body["details"] = details
    return JsonResponse(body, status=status)


class StewardAPI(NinjaAPI):
    """The API whose OpenAPI document links each created resource to what acts on it."""

    def get_openapi_schema(self, **kwargs):
        return links.add_links(super().get_openapi_schema(**kwargs))


api = StewardAPI(
    title="Steward API",
    version="1",
    description=(
        "Run AI agents, record every step, stop at human checkpoints. "
        "Authenticate with `X-API-Key: <key>` or `Authorization: Bearer <key>`."
    ),
    auth=ApiKeyAuth(),
    urls_namespace="api",
    docs_url="/docs",
)


@api.exception_handler(StewardError)
def on_domain_error(request: HttpRequest, exc: StewardError) -> HttpResponse:
    return error_response(exc.status, exc.message, exc.code, exc.details)


@api.exception_handler(IllegalTransition)
def on_illegal_transition(request: HttpRequest, exc: IllegalTransition) -> HttpResponse:
    return error_response(
        409, str(exc), "invalid_status", {"status": exc.current, "requested": exc.to}
    )


@api.exception_handler(AuthenticationError)
def on_auth_error(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    message = getattr(request, "auth_problem", None) or "missing or invalid API key"
    return error_response(401, message, "unauthorized")


@api.exception_handler(ValidationError)
def on_validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    details = []
    malformed = False
    for error in exc.errors:
        loc = [str(p) for p in error.get("loc", ()) if p not in ("body", "payload", "query")]
        if error.get("type") in {"json_invalid", "model_attributes_type"} and not loc:
            malformed = True
        details.append({"field": ".".join(loc) or "body", "message": error.get("msg", "invalid")})
    if malformed:
        return error_response(400, "request body is not a valid JSON object", "malformed_json")
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return error_response(422, f"invalid request: {summary}", "validation_error", details)


@api.exception_handler(HttpError)
def on_http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if exc.status_code == 400 and "parse request body" in str(exc):
        return error_response(400, f"request body is not valid JSON: {exc}", "malformed_json")
    return error_response(exc.status_code, str(exc), "http_error")


@api.exception_handler(json.JSONDecodeError)
def on_bad_json(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(400, f"request body is not valid JSON: {exc}", "malformed_json")


@api.exception_handler(RecursionError)
def on_too_deep(request: HttpRequest, exc: Exception) -> HttpResponse:
    # json.loads recurses once per nesting level: a body of 100,000 "[" ends here.
    return error_response(400, "request body is nested too deeply", "malformed_json")


@api.exception_handler(RequestDataTooBig)
def on_too_big(request: HttpRequest, exc: Exception) -> HttpResponse:
    return error_response(
        413,
        f"request body is larger than {settings.MAX_REQUEST_BODY_BYTES} bytes",
        "payload_too_large",
    )


def _register() -> None:
    api.add_router("/agents", agents.router)
    api.add_router("/executions", executions.router)
    api.add_router("/executions", streams.router)
    api.add_router("/approvals", approvals_router)
    api.add_router("/webhooks", webhooks_router)
    api.add_router("", workspace.router)


_register()
