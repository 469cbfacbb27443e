"""API-key authentication, shared by the native API (config/api.py) and the compat faces:
`X-API-Key: <key>` or `Authorization: Bearer <key>`; the key picks the workspace and the role.

Keys are cached for a few seconds so a polling client costs no key lookup on most requests."""

from __future__ import annotations

import hashlib
import threading
import time

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver
from django.http import HttpRequest
from ninja.security import APIKeyHeader

from executions import services
from executions.lifecycle import Actor
from executions.models import ApiKey
from executions.selectors.executions import execution_find
from executions.validation import text_problem

# Keys seen in the last few seconds, by a hash of the presented secret: a polling client costs
# no key lookup on most requests. A key saved or deleted in this process (revoked, say) is
# dropped at once; other processes notice within KEY_CACHE_SECONDS.
KEY_CACHE_SECONDS = 5.0
KEY_CACHE_MAX = 10_000
_keys: dict[bytes, tuple[float, ApiKey]] = {}
_keys_lock = threading.Lock()


def key_in_cache(raw: str) -> ApiKey | None:
    """The key when this process has it cached (and the entry is fresh), else None; no query.
    The event-loop reads (executions/api/loopread.py) use it: a miss goes to the thread path,
    whose lookup fills the cache, so both honour the same KEY_CACHE_SECONDS."""
    hit = _keys.get(hashlib.blake2b(raw.encode(), digest_size=20).digest())
    if hit is not None and hit[0] > time.monotonic():
        return hit[1]
    return None


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
    # How a presented key is looked up (CachedKeyAuth: the cache only).
    lookup = staticmethod(authenticate_cached)

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
        key = self.lookup(raw)
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


class CachedKeyAuth(ApiKeyAuth):
    """ApiKeyAuth that never queries: a key not in this process's cache reads as None."""

    lookup = staticmethod(key_in_cache)


_auth = ApiKeyAuth()
_cached_auth = CachedKeyAuth()


def read_authorised(
    request: HttpRequest, execution_id: str, *, max_length: int, cached_only: bool = False
) -> bool:
    """The polled reads' checks on the fast path (executions/api/fastpath.py explains it), shared
    by the native API and the compat faces: a GET with a well-formed id and a valid key,
    authenticated as ninja does (`cached_only`: the key from this process's cache or nothing,
    for the event loop, which must not query). `max_length` is the route's bound on the path
    parameter (its SafeStr), checked as its validator does."""
    if request.method != "GET" or text_problem(execution_id, max_length=max_length) is not None:
        return False
    key = (_cached_auth if cached_only else _auth)(request)
    if not key:
        return False
    # What ninja's operation sets before calling a view.
    request._ninja_csrf_exempt = True
    request.auth = key
    return True


def authorised_execution(request: HttpRequest, execution_id: str, *, max_length: int):
    """The execution a fast read serves, in the key's workspace; None when the full route must
    answer (a failed check or no such execution)."""
    if not read_authorised(request, execution_id, max_length=max_length):
        return None
    return execution_find(workspace=request.workspace, execution_id=execution_id)
