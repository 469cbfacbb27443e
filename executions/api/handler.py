"""The API's own ASGI handler: a sync API call costs one thread hop, not five, and no thread.

Measured (docs/performance-history.md, "API"): under Django's ASGIHandler a sync API call started a
thread per request (ThreadSensitiveContext) and a second one to join it, hopped between the
event loop and that thread five times (request_started, the sync middleware, the async
`AxesMiddleware`, the sync view, the response's close), spooled its body to a temporary file,
and ran a task listening for a disconnect; and it went through the dashboard's middleware
(sessions, CSRF, auth, messages, htmx, axes, ServeStatic), which an API call does not use.

Here a call to an API face (`/api/`, `/julep`, `/moderately`, `/discuro`) whose view is sync
runs, in one hop onto a long-lived thread ("lane") leased for the request: request_started,
the API's middleware (the project's MIDDLEWARE minus DASHBOARD_ONLY: security headers, rate
limit, CSP, common, X-Frame-Options, body size limit, in the same order), the view, and the
response's close (request_finished: the database connection goes back to the pool). A lane
runs one request at a time, so thread-sensitive code keeps its thread for the whole request,
and API_THREADS lanes per process overlap their database and Redis waits.

API calls to async views (creates, which may wait for the result; long polls; streams) go
through Django's own ASGI handling over the same API middleware, on a lane when one is free
(no thread started per request). Everything else goes to Django's handler with the full
middleware, as before: the dashboard, the OpenAPI document and its page (their CSP nonce),
paths that resolve to nothing (404s, APPEND_SLASH) and bodies over the size limit.

The polled reads (`fast_reads`: the native GET of an execution and the faces' equivalents)
go further: their view is wrapped in fastpath.FastRead (no ninja dispatch when the read
succeeds), their URL is matched by one regex once learned (`_learn_shape`), and they hop onto
the lane with `run_in_executor` instead of asgiref's thread-sensitive machinery. On PostgreSQL
their plain successful case does not leave the event loop at all (loopread.py); whatever it
declines takes the lane as above.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import logging
import re
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import ThreadSensitiveContext, iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.db import DEFAULT_DB_ALIAS, connections
from django.test.utils import override_settings
from django.urls import Resolver404, ResolverMatch, get_resolver, set_script_prefix

from executions.api.fastpath import FastRead, Read
from executions.api.loopcreate import LoopCreate, LoopCreates
from executions.api.loopread import LoopRead, LoopReads, find_limiter
from executions.middleware import too_large

logger = logging.getLogger("steward.http")

API_PREFIXES = ("/api/", "/julep", "/moderately", "/discuro")
# Served by Django's handler: the docs page carries a CSP nonce the full chain adds.
SLOW_PATHS = ("/api/v1/docs", "/api/v1/openapi.json")
# Middleware an API call does not need: it authenticates by key, not by session or cookie,
# renders no page and sends no message; static files are not under the API's prefixes.
DASHBOARD_ONLY = frozenset(
    {
        "servestatic.middleware.ServeStaticMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django_htmx.middleware.HtmxMiddleware",
        "axes.middleware.AxesMiddleware",
    }
)
MATCH = "steward.resolver_match"
# Paths of fast routes without parameters remembered as resolved (a handful in practice).
PATHS_MAX = 64
# The path parameters a learned shape may stand for (`_learn_shape`).
SHAPED = ("execution_id", "agent_id")
UUID_SHAPE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def _clone(match: ResolverMatch) -> ResolverMatch:
    # ResolverMatch refuses copy.copy (it forbids pickling); its state is plain attributes.
    clone = object.__new__(ResolverMatch)
    clone.__dict__.update(match.__dict__)
    return clone


def api_middleware() -> list[str]:
    return [name for name in settings.MIDDLEWARE if name not in DASHBOARD_ONLY]


TOO_LARGE = b"(too large)"


async def read_body(receive) -> bytes | None:
    """The whole body (the API's are small), None if the client left, TOO_LARGE past the
    limit (chunked bodies carry no length to refuse them by)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= settings.MAX_REQUEST_BODY_BYTES:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks) if size <= settings.MAX_REQUEST_BODY_BYTES else TOO_LARGE


class KeptBody(io.BytesIO):
    """A body a view may still read after Django's handler has given up on a departed client:
    Django closes the body file then, and the view's thread, still running, failed with "I/O
    operation on closed file", logged as an Internal Server Error for a client who had left."""

    def close(self) -> None:
        pass


class AsyncApiHandler(ASGIHandler):
    """Django's ASGI handler over the API's middleware: for API calls to async views."""

    def load_middleware(self, is_async: bool = False) -> None:
        with override_settings(MIDDLEWARE=api_middleware()):
            super().load_middleware(is_async=is_async)

    async def read_body(self, receive):
        # ApiHandler has read the body already and replays it as one message.
        message = await receive()
        if message["type"] == "http.disconnect":
            raise RequestAborted
        return KeptBody(message.get("body", b""))


class ApiHandler(ASGIHandler):
    """Sync API calls on leased lanes through the API's middleware; async API views through
    AsyncApiHandler, on a lane too when one is free; the rest to `fallback`."""

    def __init__(
        self,
        fallback,
        fast_reads: dict[str, Read] | None = None,
        loop_reads: dict[str, LoopRead] | None = None,
        loop_creates: dict[str, LoopCreate] | None = None,
    ) -> None:
        self.fallback = fallback
        # URL name -> a fast read for that route's view (fastpath.py); config/asgi.py gives
        # the native API's and the faces' (this package may not import the faces).
        self.fast_reads = dict(fast_reads or {})
        # URL names of the routes whose URL is remembered once resolved (see `_match`).
        self.remembered = set(self.fast_reads) | set(loop_creates or {})
        self.async_api = AsyncApiHandler()
        self.lanes_max = max(1, int(getattr(settings, "API_THREADS", 16)))
        self._idle: deque[ThreadPoolExecutor] = deque()
        self._made = 0
        self._shapes: list[tuple[re.Pattern, ResolverMatch]] = []
        self._paths: dict[str, ResolverMatch] = {}
        super().__init__()
        # Import the URLconf now, not on the event loop at the first call.
        self.url_patterns = get_resolver().url_patterns
        # The fast reads' successful case on the loop itself (loopread.py), on PostgreSQL.
        self.loop: LoopReads | None = None
        size = int(getattr(settings, "API_LOOP_CONNECTIONS", 8))
        if loop_reads and size > 0 and connections[DEFAULT_DB_ALIAS].vendor == "postgresql":
            limiter = find_limiter(self._middleware_chain)
            self.loop = LoopReads(self, loop_reads, api_middleware(), limiter, size)
        # The plain successful creates on the loop too (loopcreate.py), sharing its connections.
        self.creates: LoopCreates | None = None
        if self.loop is not None and loop_creates and settings.API_LOOP_CREATES:
            self.creates = LoopCreates(self, loop_creates, self.loop)

    async def aclose(self) -> None:
        """Close this loop's idle async connections (the tests run a loop per call)."""
        if self.loop is not None:
            await self.loop.connections.aclose()

    def load_middleware(self, is_async: bool = False) -> None:
        # One sync chain (no sync/async adapters between middleware): the lane runs it whole.
        with override_settings(MIDDLEWARE=api_middleware()):
            super().load_middleware(is_async=False)

    async def __call__(self, scope, receive, send) -> None:
        match = self._match(scope)
        if match is None:
            return await self.fallback(scope, receive, send)
        body = await read_body(receive)
        if body is None:
            return  # the client left before sending its request
        if body is TOO_LARGE:
            await self.send_response(too_large(), send)
            return
        loop = self.loop if isinstance(match.func, FastRead) and not body else None
        if loop is not None and await loop.serve(scope, send, match):
            return
        creates = self.creates if body and self.creates is not None else None
        if creates is not None and await creates.serve(scope, send, match, body):
            return
        if iscoroutinefunction(match.func):
            replayed = False

            async def replay():
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            # Its sync parts run on a lane; a view that waits long (a long poll, `sync: true`)
            # holds it meanwhile, and requests that find every lane busy get a fresh thread.
            lane = self._lease()
            try:
                async with (
                    ThreadSensitiveContext(executor=lane) if lane else ThreadSensitiveContext()
                ):
                    await self.async_api.handle(scope, replay, send)
            finally:
                if lane is not None:
                    self._idle.append(lane)
            return
        lane = self._lease()
        if lane is not None and isinstance(match.func, FastRead):
            # A polled read: straight onto the lane (no asgiref context: nothing on this path
            # calls back into async code), a tenth of a read's Python less.
            try:
                loop = asyncio.get_running_loop()
                run = contextvars.copy_context().run
                response = await loop.run_in_executor(
                    lane, run, self._serve, {**scope, MATCH: match}, body
                )
                await self.send_response(response, send)
                if response.streaming:
                    await loop.run_in_executor(lane, run, response.close)
            finally:
                self._idle.append(lane)
            return
        try:
            async with ThreadSensitiveContext(executor=lane) if lane else ThreadSensitiveContext():
                scope = {**scope, MATCH: match}
                response = await sync_to_async(self._serve, thread_sensitive=True)(scope, body)
                await self.send_response(response, send)
                if response.streaming:
                    await sync_to_async(response.close, thread_sensitive=True)()
        finally:
            if lane is not None:
                self._idle.append(lane)

    def _match(self, scope):
        """The URL match when this is an API view we serve, else None."""
        path = scope["path"]
        if scope["type"] != "http" or not path.startswith(API_PREFIXES):
            return None
        if path.startswith(SLOW_PATHS) or scope.get("root_path"):
            return None
        length = 0
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    return None
        if length > settings.MAX_REQUEST_BODY_BYTES:
            return None  # Django's handler answers 413 without reading it
        template = self._paths.get(path)
        if template is not None:
            return self._fast(template)
        for shape, template in self._shapes:
            found = shape.match(path)
            if found is not None:
                return self._fast(template, found.groupdict())
        try:
            match = get_resolver().resolve(path)
        except Resolver404:
            return None
        if match.view_name in self.remembered:
            if match.kwargs:
                self._learn_shape(path, match)
            elif len(self._paths) < PATHS_MAX:
                # A route without parameters (Discuro's retrieve, `POST /executions`).
                self._paths[path] = match
            return self._fast(match)
        return match

    def _fast(self, template: ResolverMatch, kwargs: dict | None = None) -> ResolverMatch:
        """A remembered route's match for this request: a fast read's view wrapped in
        FastRead; a create's as it is (loopcreate.py serves it before the view)."""
        match = _clone(template)
        if kwargs is not None:
            match.kwargs = match.captured_kwargs = kwargs
        read = self.fast_reads.get(match.view_name)
        if read is not None:
            match.func = FastRead(template.func, read)
        return match

    def _learn_shape(self, path: str, match) -> None:
        """Resolving a path walks the whole URLconf (a tenth of a read's Python). A fast route
        resolved once for an execution (or agent) id shaped like a UUID is then matched by one
        regex for any UUID at that place: no literal route there is UUID-shaped (the inbox's
        `approval-inbox`, say), so Django's resolver could pick no other pattern for it."""
        if any(template.view_name == match.view_name for _, template in self._shapes):
            return
        if len(match.kwargs) != 1 or next(iter(match.kwargs)) not in SHAPED:
            return
        [(name, value)] = match.kwargs.items()
        head, marker, tail = match.route.partition(f"<{name}>")
        if not marker or "<" in head + tail:
            return
        if not UUID_SHAPE.fullmatch(value) or path != f"/{head}{value}{tail}":
            return
        pattern = f"^/{re.escape(head)}(?P<{name}>{UUID_SHAPE.pattern}){re.escape(tail)}$"
        self._shapes.append((re.compile(pattern), match))

    def _lease(self) -> ThreadPoolExecutor | None:
        try:
            return self._idle.pop()
        except IndexError:
            pass
        if self._made >= self.lanes_max:
            return None  # all busy: this request gets a thread of its own, as Django does
        self._made += 1
        return ThreadPoolExecutor(max_workers=1, thread_name_prefix="api-lane")

    def _serve(self, scope, body: bytes):
        """On the lane: the whole request, closed before it is sent unless it streams."""
        set_script_prefix(get_script_prefix(scope))
        signals.request_started.send(sender=self.__class__, scope=scope)
        request, response = self.create_request(scope, io.BytesIO(body))
        if request is not None:
            response = self.get_response(request)
            response._handler_class = self.__class__
        if not response.streaming:
            response.close()
        return response

    def resolve_request(self, request):
        # Resolved once already, to tell a sync view from an async one.
        match = request.scope.get(MATCH)
        if match is None:
            return super().resolve_request(request)
        request.resolver_match = match
        return match
