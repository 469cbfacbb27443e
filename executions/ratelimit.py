"""API rate limits per key, answered in each face's own error shape.

Every call to an API face (`/api/`, `/julep`, `/moderately`, `/discuro`) counts against a limit
per API key, or per client address when it carries no key (`settings.RATE_LIMIT`, in the
notation of the `limits` library; default 500 per 10 seconds: 50 req/s sustained, bursts
allowed). The counter is `limits`' sliding window counter, kept in Redis when REDIS_URL is set
(so the limit holds across every web process) and in memory in the embedded topology.

Cheap on purpose: it runs before sessions and authentication, reads the key from the headers
without looking it up (the counter is keyed by a hash of the presented key, never the key), and
most calls cost no Redis round trip: after the shared counter admits a call, the process may
admit up to LOCAL_BATCH more calls of the same key on its own for LOCAL_SECONDS, then adds
them to the shared counter with the next call's hit (one round trip for the lot). The batch is
a fiftieth of the limit (none for limits under 50, which are counted exactly), and a key
that has been refused is counted exactly for a window, so N processes can overshoot a limit by
at most N batches (and a quarter: the event loop's admissions top a batch up before it runs
out, `admit_here`) a window. A refused call
costs a second round trip to tell the client when to come back (`Retry-After`, whole seconds,
which every SDK we speak parses).

If Redis is unreachable the limit is not enforced (fail open: the API matters more than its
throttle) and the outage is logged once, as is the recovery; meanwhile Redis is only retried
every few seconds so requests do not each wait for a connect timeout.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.http import HttpRequest, HttpResponse, JsonResponse
from limits import RateLimitItem, parse, storage, strategies

from executions.compat import common, discuro, julep, moderately

logger = logging.getLogger("steward.ratelimit")

OFF = {"", "0", "off", "none", "false", "no"}
# After a storage failure, skip the storage (allow) for this long before trying it again.
RETRY_STORAGE_SECONDS = 5.0
# Calls a process may admit on its own after a shared hit: a fiftieth of the limit, at most
# LOCAL_BATCH_MAX, for at most LOCAL_SECONDS (see the module's docstring).
LOCAL_SHARE = 50
LOCAL_BATCH_MAX = 100
LOCAL_SECONDS = 1.0
LOCAL_KEYS_MAX = 10_000
# Batches this large or larger are topped up before they run out (`admit_here`); smaller ones
# (limits under 200 a window) are counted as the lanes count them, call for call.
REFILL_MIN = 4


def client_address(request: HttpRequest) -> str | None:
    """The client's address: REMOTE_ADDR, or behind TRUSTED_PROXY_COUNT proxies the address
    the outermost trusted proxy saw (the Nth entry from the right of X-Forwarded-For); None
    when there is no valid one (a Unix socket, a garbled header, force_login in tests).
    Also django-axes' AXES_CLIENT_IP_CALLABLE, so lockouts and limits agree on who is who
    (axes stores it in an IP address column, hence the validation)."""
    candidate = request.META.get("REMOTE_ADDR") or ""
    count = getattr(settings, "TRUSTED_PROXY_COUNT", 0)
    if count:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        hops = [h for h in hops if h]
        if len(hops) >= count:
            candidate = hops[-count]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def identity(request: HttpRequest) -> str:
    """Who a call counts against: a hash of its API key (X-API-Key or Bearer), else its address."""
    key = request.META.get("HTTP_X_API_KEY", "")
    if not key:
        auth = request.META.get("HTTP_AUTHORIZATION", "")
        if auth[:7].lower() == "bearer ":
            key = auth[7:].strip()
    if key:
        return "k:" + hashlib.blake2b(key.encode(), digest_size=16).hexdigest()
    return "a:" + (client_address(request) or "unknown")


# --- 429 in each face's shape -----------------------------------------------------------------


def _message(limit: RateLimitItem, retry_after: int) -> str:
    return f"rate limit exceeded ({limit}); retry in {retry_after} s"


def _native(request: HttpRequest, limit: RateLimitItem, retry_after: int) -> HttpResponse:
    return JsonResponse(
        {
            "error": _message(limit, retry_after),
            "code": "rate_limited",
            "details": {"limit": str(limit), "retry_after": retry_after},
        },
        status=429,
    )


def _julep(request: HttpRequest, limit: RateLimitItem, retry_after: int) -> HttpResponse:
    response = julep.render_error(
        request, common.Problem(429, _message(limit, retry_after), "rate_limited")
    )
    # The face says "do not retry" for its other errors; a 429 is exactly what to retry.
    response["x-should-retry"] = "true"
    return response


def _moderately(request: HttpRequest, limit: RateLimitItem, retry_after: int) -> HttpResponse:
    return moderately.render_error(
        request, common.Problem(429, _message(limit, retry_after), "rate_limited")
    )


def _discuro(request: HttpRequest, limit: RateLimitItem, retry_after: int) -> HttpResponse:
    return discuro.error(_message(limit, retry_after), status=429)


FACES: tuple[tuple[str, Callable[[HttpRequest, RateLimitItem, int], HttpResponse]], ...] = (
    ("/api/", _native),
    ("/julep", _julep),
    ("/moderately", _moderately),
    ("/discuro", _discuro),
)


# --- the limiter ------------------------------------------------------------------------------


class Limiter:
    """One `limits` limiter over one storage, failing open (and logging once) when it breaks."""

    identity = staticmethod(identity)  # for callers that may not import this module

    def __init__(self, spec: str, uri: str) -> None:
        self.item = parse(spec)
        options = {}
        if uri.startswith(("redis://", "rediss://")):
            # Short timeouts: a hung Redis must cost a request milliseconds, not seconds.
            options = {"socket_timeout": 0.25, "socket_connect_timeout": 0.25}
        self.storage = storage.storage_from_string(uri, **options)
        self.strategy = strategies.SlidingWindowCounterRateLimiter(self.storage)
        self.batch = min(LOCAL_BATCH_MAX, self.item.amount // LOCAL_SHARE)
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self._skip_until = 0.0
        # who -> [calls admitted here and not yet counted, calls still allowed here, until,
        # no local calls until, a refill under way] (after a refusal the key is counted
        # exactly for a window)
        self._local: dict[str, list] = {}
        self._refills: ThreadPoolExecutor | None = None

    def check(self, who: str) -> int | None:
        """None when the call may go ahead, else the seconds to wait."""
        now = time.monotonic()
        if self._skip_until and now < self._skip_until:
            return None
        pending = 0
        exact_until = 0.0
        if self.batch:
            with self._lock:
                state = self._local.get(who)
                if state is not None:
                    if state[1] > 0 and now < state[2]:
                        state[0] += 1
                        state[1] -= 1
                        return None
                    pending, exact_until = state[0], state[3]
                    state[0] = state[1] = 0
        try:
            if self.strategy.hit(self.item, "api", who, cost=pending + 1):
                self._recovered()
                if self.batch:
                    allowed = self.batch if now >= exact_until else 0
                    self._remember(who, [0, allowed, now + LOCAL_SECONDS, exact_until, False])
                return None
            if pending:  # the calls admitted here still count, though this one is refused
                self.strategy.hit(self.item, "api", who, cost=pending)
            if self.batch:
                self._remember(who, [0, 0, now, now + self.item.get_expiry(), False])
            stats = self.strategy.get_window_stats(self.item, "api", who)
        except Exception as exc:  # noqa: BLE001 - any storage failure: allow, log once
            self._failed(exc)
            return None
        self._recovered()
        return max(1, math.ceil(stats.reset_time - time.time()))

    def admit_here(self, who: str) -> list | bool:
        """`check`'s first step alone: admit the call from this process's batch (or while the
        storage is skipped) without a round trip; False when `check` would need the storage.
        The event-loop reads and creates use it (executions/api/loopread.py, loopcreate.py)
        and go to the thread path, which calls `check`, on False. Truthy values are tokens
        for `refund`.

        A batch of REFILL_MIN or more running low (a quarter left, or half its time gone) is
        topped up on the limiter's own thread (`_refill`: the calls admitted so far go to the
        shared counter, and if it admits them the batch starts afresh), so a busy key's calls
        are not sent to the thread path every LOCAL_BATCH calls: that was 1 % of the loop's
        creates and reads, each taking a lane, a Redis round trip and ninja
        (docs/performance-history.md, "Create tail"). Calls admitted while a refill is under way are
        counted by the next one."""
        now = time.monotonic()
        if self._skip_until and now < self._skip_until:
            return True
        if not self.batch:
            return False
        with self._lock:
            state = self._local.get(who)
            if state is None or state[1] <= 0 or now >= state[2]:
                return False
            state[0] += 1
            state[1] -= 1
            low = state[1] <= self.batch // 4 or state[2] - now < LOCAL_SECONDS / 2
            if low and self.batch >= REFILL_MIN and not state[4]:
                state[4] = True
                self._refiller().submit(self._refill, who, state)
            return state

    def _refiller(self) -> ThreadPoolExecutor:
        if self._refills is None:
            self._refills = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ratelimit")
        return self._refills

    def _refill(self, who: str, state: list) -> None:
        """On the limiter's thread: count the calls `state` admitted so far and, if the shared
        counter admits them, give the key a fresh batch; if not, the key is counted exactly
        for a window, as `check` does after a refusal."""
        with self._lock:
            if self._local.get(who) is not state:
                return
            pending, state[0] = state[0], 0
        try:
            allowed = pending == 0 or self.strategy.hit(self.item, "api", who, cost=pending)
        except Exception as exc:  # noqa: BLE001 - as in `check`: allow, log once
            self._failed(exc)
            allowed = True
        else:
            self._recovered()
        now = time.monotonic()
        with self._lock:
            if allowed and now >= state[3]:
                state[1], state[2] = self.batch, now + LOCAL_SECONDS
            else:
                state[1], state[2], state[3] = 0, now, now + self.item.get_expiry()
            state[4] = False

    def refund(self, who: str, token: list | bool) -> None:
        """Undo `admit_here` for a call handed on to the thread path, which counts it again."""
        if isinstance(token, list):
            with self._lock:
                if self._local.get(who) is token and token[0] > 0:
                    token[0] -= 1
                    token[1] += 1

    def _remember(self, who: str, state: list) -> None:
        with self._lock:
            if len(self._local) >= LOCAL_KEYS_MAX:
                self._local.clear()
            self._local[who] = state

    def _failed(self, exc: Exception) -> None:
        with self._lock:
            self._skip_until = time.monotonic() + RETRY_STORAGE_SECONDS
            if self._down_since is None:
                self._down_since = time.monotonic()
                logger.warning(
                    "rate limit storage unavailable (%s: %s); not enforcing limits until it is up",
                    type(exc).__name__,
                    exc,
                )

    def _recovered(self) -> None:
        if self._down_since is None:
            return
        with self._lock:
            if self._down_since is not None:
                logger.warning(
                    "rate limit storage is back after %.0f s; enforcing limits again",
                    time.monotonic() - self._down_since,
                )
                self._down_since = None
                self._skip_until = 0.0


class RateLimitMiddleware:
    """Refuse an API call over its key's limit with 429 + Retry-After, before anything else."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        spec = str(getattr(settings, "RATE_LIMIT", "") or "").strip()
        if spec.lower() in OFF:
            raise MiddlewareNotUsed
        self.get_response = get_response
        self.limiter = Limiter(spec, settings.RATE_LIMIT_STORAGE)

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path
        for prefix, render in FACES:
            if path.startswith(prefix):
                retry_after = self.limiter.check(identity(request))
                if retry_after is not None:
                    response = render(request, self.limiter.item, retry_after)
                    response["Retry-After"] = str(retry_after)
                    return response
                break
        return self.get_response(request)
