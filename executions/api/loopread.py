"""The polled reads answered on the event loop itself, on PostgreSQL: no hop onto a lane.

After the fast path (fastpath.py) a read's remaining cost was mostly uvicorn and the hop onto
the lane thread and back (docs/performance-history.md, "API"). Here ApiHandler (handler.py)
serves the plain successful read of a fast route without leaving the loop:

- the key from this process's key cache only (auth.CachedKeyAuth: no query; a key that is not
  cached goes to the thread path, whose lookup fills the cache, so a revoked key is refused
  within the same KEY_CACHE_SECONDS on both paths);
- the rate limit's in-process admission only (ratelimit.Limiter.admit_here: a dict update; a
  call that needs the shared counter goes to the thread path);
- one query on an async psycopg connection of this loop: the lean read's SQL, parameters and
  converters (selectors/executions.py), with Django's own adapters for the connection;
- the face's serialiser, and the API middleware chain minus the rate limit (which adds nothing
  to a call it admits) around the finished response, run on the loop: the same security
  headers, CSP, X-Frame-Options and Content-Length as the thread path, from the same settings
  and middleware classes, so they cannot drift.

Anything else (no key in the cache, a miss, another workspace's id, a 4xx, a method other than
GET, every connection of this loop busy, any error) returns False before anything is sent, the
admission is refunded, and the request goes on to the thread path as before. SQLite keeps the
thread path (sqlite3 has no async driver). tests/executions/test_api_fastpath.py sends the
same requests both ways and compares status, headers and bodies.
"""

from __future__ import annotations

import asyncio
import io
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass

import psycopg
from django.core.handlers.base import BaseHandler
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.test.utils import override_settings

from executions.models import Execution
from executions.selectors.executions import _LEAN_SQL, _lean_build, _lean_params

RESPONSE = "steward_loop_response"


def path_id(request: HttpRequest, kwargs: dict) -> str | None:
    return kwargs.get("execution_id")


@dataclass(frozen=True)
class LoopRead:
    """A fast route's read on the loop: `check` authenticates from the cache and validates the
    id (no query; False hands the request on), `render` shapes the execution (None hands on).
    `locate` finds the id (the path's, or Discuro's `?id=`), `method` is the route's."""

    check: Callable[[HttpRequest, str], bool]
    render: Callable[[HttpRequest, Execution], HttpResponse | None]
    locate: Callable[[HttpRequest, dict], str | None] = path_id
    method: str = "GET"


class HeadersChain(BaseHandler):
    """The API's middleware (minus the rate limit, admitted before) around a view that returns
    the response the loop has made."""

    def __init__(self, middleware: list[str]) -> None:
        self.middleware = [m for m in middleware if m != "executions.ratelimit.RateLimitMiddleware"]
        self.load_middleware()

    def load_middleware(self, is_async: bool = False) -> None:
        with override_settings(MIDDLEWARE=self.middleware):
            super().load_middleware(is_async=False)

    def _get_response(self, request: HttpRequest) -> HttpResponse:
        return getattr(request, RESPONSE)


def find_limiter(chain):
    """The RateLimitMiddleware's limiter (ratelimit.Limiter) in a loaded middleware chain
    (Django wraps each middleware with functools.wraps, so `__wrapped__` leads from one to the
    next), or None when the limit is off. Found by its attribute: this package may not import
    ratelimit (which imports the faces)."""
    while chain is not None:
        middleware = getattr(chain, "__wrapped__", None)
        if hasattr(getattr(middleware, "limiter", None), "admit_here"):
            return middleware.limiter
        chain = getattr(middleware, "get_response", None)
    return None


class LoopConnections:
    """Up to `size` autocommit async connections per event loop (a worker has one loop; the
    tests start one per call and close it with `aclose`). A read that finds them all busy
    waits for one on the loop: sending it to a lane instead cost more than the wait, since the
    lane's thread then contends with the loop for the GIL."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._params: dict | None = None
        # A wrapper that never connects: the converters' and the parameters' `connection`.
        self.db = connections.create_connection(Execution.objects.db)

    def _state(self) -> list:
        return self._loops[asyncio.get_running_loop()]

    async def _closer(self, state: list):
        """An async generator left open for the loop's life: asyncio closes such generators
        when the loop ends (`shutdown_asyncgens`, in asyncio.run and uvicorn), and this one
        then closes the loop's connections (the tests, and Channels' communicators, run
        many short loops; their connections must not outlive them)."""
        try:
            yield
        finally:
            idle, state[0] = state[0], []
            for conn in idle:
                with suppress(Exception):
                    await conn.close()

    async def lease(self) -> psycopg.AsyncConnection | None:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = [[], 0, deque()]  # idle, open, waiting futures
            closer = self._closer(state)
            state.append(closer)
            await anext(closer)
        while state[0]:
            conn = state[0].pop()
            if not conn.closed:
                return conn
            state[1] -= 1
        if state[1] >= self.size:
            waiter = asyncio.get_running_loop().create_future()
            state[2].append(waiter)
            try:
                return await waiter  # a connection handed over by `release`, or None
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self.release(waiter.result(), True)  # handed over as we were cancelled
                raise
        if self._params is None:
            params = dict(self.db.get_connection_params())
            params.pop("cursor_factory", None)  # Django's sync cursor class
            # Django turns prepared statements off (for poolers); these connections prepare
            # their one statement (`prepare=True` below) to spare the server its planning.
            params.pop("prepare_threshold", None)
            self._params = params
        state[1] += 1
        try:
            return await psycopg.AsyncConnection.connect(**self._params, autocommit=True)
        except Exception:
            state[1] -= 1
            raise

    def release(self, conn: psycopg.AsyncConnection, ok: bool) -> None:
        state = self._state()
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        if not (ok and idle and not conn.closed):
            state[1] -= 1
            asyncio.get_running_loop().create_task(conn.close())
            conn = None
        while state[2]:
            waiter = state[2].popleft()
            if not waiter.done():
                waiter.set_result(conn)  # None: the waiter goes to the thread path
                return
        if conn is not None:
            state[0].append(conn)

    async def aclose(self) -> None:
        state = self._loops.get(asyncio.get_running_loop())
        if state is None:
            return
        idle, state[0] = state[0], []
        for conn in idle:
            state[1] -= 1
            await conn.close()


class LoopReads:
    def __init__(self, handler, reads: dict[str, LoopRead], middleware: list[str], limiter, size):
        self.handler = handler
        self.reads = reads
        self.chain = HeadersChain(middleware)
        self.limiter = limiter
        self.connections = LoopConnections(size)
        self.served: Counter[str] = Counter()

    async def serve(self, scope, send, match) -> bool:
        """Answer the read on the loop and return True, or return False having sent nothing."""
        read = self.reads.get(match.view_name)
        if read is None or scope["method"] != read.method:
            return False
        handler, token, who = self.handler, None, None
        try:
            request, _ = handler.create_request(scope, io.BytesIO(b""))
            if request is None:
                return False
            request.resolver_match = match
            execution_id = read.locate(request, match.kwargs)
            if execution_id is None:
                return False
            pk = uuid.UUID(execution_id)
            if not read.check(request, execution_id):
                return False
            if self.limiter is not None:
                who = self.limiter.identity(request)
                token = self.limiter.admit_here(who)
                if not token:
                    return False
            execution = await self._find(request.workspace, pk)
            response = None if execution is None else read.render(request, execution)
            if response is None:
                self._refund(who, token)
                return False
            setattr(request, RESPONSE, response)
            response = self.chain.get_response(request)
        except Exception:  # noqa: BLE001 - the thread path answers (and reports) it
            self._refund(who, token)
            return False
        response._handler_class = handler.__class__
        self.served[match.view_name] += 1
        await handler.send_response(response, send)
        response.close()
        return True

    def _refund(self, who, token) -> None:
        if token:
            self.limiter.refund(who, token)

    async def _find(self, workspace, pk) -> Execution | None:
        conn = await self.connections.lease()
        if conn is None:
            return None  # a connection broke meanwhile: the thread path reads it
        ok = False
        try:
            params = _lean_params(self.connections.db, workspace=workspace, pk=pk)
            cursor = await conn.execute(_LEAN_SQL, params, prepare=True)
            row = await cursor.fetchone()
            ok = True
        finally:
            self.connections.release(conn, ok)
        return None if row is None else _lean_build(self.connections.db, row)
