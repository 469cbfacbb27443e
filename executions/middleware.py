"""Request plumbing: body size limit, and the current workspace of a logged-in user."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable
from contextlib import suppress

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from executions import selectors

SESSION_KEY = "workspace_id"
logger = logging.getLogger("steward.http")


class WorkspaceMiddleware:
    """Refuse oversized bodies with 413 before anything reads them, and for dashboard users
    resolve `request.workspace` / `request.membership` from their memberships."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > settings.MAX_REQUEST_BODY_BYTES:
            return too_large()
        request.membership = None
        if not request.path.startswith(("/api/", "/julep", "/moderately", "/discuro", "/static")):
            user = getattr(request, "user", None)
            if user is not None and user.is_authenticated:
                request.memberships = selectors.membership_list_for_user(user=user)
                request.membership = current_membership(request)
                request.workspace = request.membership.workspace if request.membership else None
        return self.get_response(request)


def too_large() -> JsonResponse:
    return JsonResponse(
        {
            "error": f"request body is larger than {settings.MAX_REQUEST_BODY_BYTES} bytes",
            "code": "payload_too_large",
        },
        status=413,
    )


def current_membership(request: HttpRequest):
    """The workspace chosen in the session, or the user's first one. Picked from
    `request.memberships`, the user's memberships read once (one query): the workspace
    switcher in every page's header lists the same rows (context_processors.workspace)."""
    memberships = request.memberships
    wanted = str(request.session.get(SESSION_KEY) or "")
    if wanted:
        for membership in memberships:
            if str(membership.workspace_id) == wanted:
                return membership
    return memberships[0] if memberships else None


class DepartedClientGuard:
    """ASGI wrapper: a client that goes away mid-request is not a server error.

    When a load generator (or a user closing a tab) disconnects with requests in flight,
    Django's ASGI handler cancels the view and its clean-up then fails on the torn-down
    executor or the closed body file ("CurrentThreadExecutor already quit",
    "I/O operation on closed file"), which the server logs as "Exception in ASGI application".
    Once the client has disconnected there is nobody to answer: such errors are logged at
    debug level and dropped; errors before a disconnect propagate as before.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        departed = False

        async def watched_receive():
            nonlocal departed
            message = await receive()
            if message["type"] == "http.disconnect":
                departed = True
            return message

        try:
            await self.app(scope, watched_receive, send)
        except (RuntimeError, OSError, ValueError) as exc:
            if not departed:
                raise
            logger.debug("client left %s before its reply: %s", scope.get("path"), exc)


class KeepAliveBalance:
    """ASGI wrapper: keep-alive connections spread evenly over the web processes.

    The web processes (uvicorn --workers N) share one listening socket, and each accepts every
    connection waiting when it wakes, so a burst of connects (a proxy's pool, a load generator)
    lands unevenly and stays so while the connections are kept alive: wrk's 32 connections
    split 2/30, 7/25, 8/24 over two processes (docs/performance-history.md, "Create tail"), and the
    process holding most of them queues its requests for its event loop and database
    connections while the other idles.

    Each process counts the clients (host, port) it served in the last IDLE seconds and, every
    REFRESH seconds, writes that count to a file named by its pid in a directory shared with
    its siblings (named by their parent process) and reads theirs. A process holding more than
    its share (total ÷ live processes, rounded up, plus one) answers that many of its
    connections' next responses with `Connection: close` (HTTP/1.1 lets a server close a
    keep-alive connection after any response); their clients reconnect, and the sibling with
    fewer connections, idler, usually accepts first. A process alone never closes anything.
    """

    REFRESH = 0.5
    IDLE = 2.0

    def __init__(self, app, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled
        self.seen: dict[tuple, float] = {}
        self.excess = 0
        self.refresh_at = 0.0
        self.closed = 0  # connections closed to rebalance (for the benches)
        self.folder = os.path.join(tempfile.gettempdir(), f"steward-web-{os.getppid()}")
        self.path = os.path.join(self.folder, str(os.getpid()))
        if enabled:
            self._publish()  # present to the siblings before serving anything

    async def __call__(self, scope, receive, send) -> None:
        client = scope.get("client")
        if not self.enabled or scope["type"] != "http" or not client:
            return await self.app(scope, receive, send)
        now = time.monotonic()
        key = tuple(client)
        self.seen[key] = now
        if now >= self.refresh_at:
            self.refresh_at = now + self.REFRESH
            self._refresh(now)
        if self.excess <= 0 or scope.get("http_version") != "1.1":
            return await self.app(scope, receive, send)
        self.excess -= 1
        self.closed += 1
        self.seen.pop(key, None)

        async def closing_send(message):
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        return await self.app(scope, receive, closing_send)

    def _publish(self) -> bool:
        try:
            os.makedirs(self.folder, exist_ok=True)
            with open(self.path, "w") as fh:
                fh.write(str(len(self.seen)))
        except OSError:
            return False
        return True

    def _refresh(self, now: float) -> None:
        """Drop clients gone quiet, publish this process's count, read the live siblings'
        (a sibling that served nothing for IDLE seconds holds no busy connection: 0)."""
        self.seen = {k: t for k, t in self.seen.items() if now - t < self.IDLE}
        self.excess = 0
        if not self._publish():
            return  # best effort: no balancing without the siblings' counts
        total, processes, wall = 0, 0, time.time()
        for name in os.listdir(self.folder):
            path = os.path.join(self.folder, name)
            try:
                os.kill(int(name), 0)
            except (ValueError, ProcessLookupError):
                with suppress(OSError):
                    os.unlink(path)  # a sibling that exited
                continue
            except OSError:
                continue
            processes += 1
            try:
                if wall - os.stat(path).st_mtime < self.IDLE + self.REFRESH:
                    with open(path) as fh:
                        total += int(fh.read() or 0)
            except (OSError, ValueError):
                continue
        share = -(-total // max(processes, 1)) + 1
        self.excess = max(0, len(self.seen) - share)
