"""The native JSON API (`/api/v1`): one NinjaAPI, key auth, the uniform error body."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time

from django.core.exceptions import RequestDataTooBig
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.security import APIKeyHeader

from approvals.api import router as approvals_router
from approvals.api import webhooks_router
from executions import services
from executions.api import agents, executions, streams, workspace
from executions.errors import StewardError
from executions.lifecycle import Actor, IllegalTransition
from executions.models import ApiKey

logger = logging.getLogger("steward.api")


def error_response(status: int, message: str, code: str, details=None) -> JsonResponse:
    body = {"error": message, "code": code}
    if details is not None:
        body["details"] = details
    return JsonResponse(body, status=status)


# Keys seen in the last few seconds, by a hash of the presented secret: a polling client costs
# no key lookup on most requests. A key saved or deleted in this process (revoked, say) is
# dropped at once; other processes notice within KEY_CACHE_SECONDS.
KEY_CACHE_SECONDS = 5.0
KEY_CACHE_MAX = 10_000
_keys: dict[bytes, tuple[float, ApiKey]] = {}
_keys_lock = threading.Lock()


def authenticate_cached(raw: str) -> ApiKey | None:
    digest = hashlib.blake2b(raw.encode(), digest_size=20).digest()
    now = time.monotonic()
    hit = _keys.get(digest)
    if hit is not None and hit[0] > now:
        return hit[1]
    key = services.apikey_authenticate(raw=raw)
    if key is not None and key.revoked_at is None:
        with _keys_lock:
            if len(_keys) >= KEY_CACHE_MAX:
                _keys.clear()
            _keys[digest] = (now + KEY_CACHE_SECONDS, key)
    return key


@receiver(post_save, sender=ApiKey)
@receiver(post_delete, sender=ApiKey)
def forget_cached_keys(**kwargs) -> None:
    with _keys_lock:
        _keys.clear()


class ApiKeyAuth(APIKeyHeader):
    """`X-API-Key: <key>` or `Authorization: Bearer <key>`; the key picks the workspace."""

    param_name = "X-API-Key"

    def __call__(self, request: HttpRequest):
        raw = request.headers.get("X-API-Key", "")
        if not raw:
            auth = request.headers.get("Authorization", "")
            scheme, _, token = auth.partition(" ")
            if scheme.lower() in {"bearer", "token"}:
                raw = token.strip()
        request.auth_problem = None
        if not raw:
            request.auth_problem = "missing API key: send X-API-Key or Authorization: Bearer"
            return None
        key = authenticate_cached(raw)
        if key is None:
            request.auth_problem = "invalid API key"
            return None
        if key.revoked_at is not None:
            request.auth_problem = f"API key {key.prefix} was revoked"
            return None
        request.api_key = key
        request.workspace = key.workspace
        request.role = key.role
        request.actor = Actor.for_key(key)
        return key

    def authenticate(self, request: HttpRequest, key: str | None):  # pragma: no cover
        return None


api = NinjaAPI(
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
    from django.conf import settings

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
