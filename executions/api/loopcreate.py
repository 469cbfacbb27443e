"""Creates answered on the event loop itself, on PostgreSQL: no hop onto a lane, no ninja.

py-spy on a uvicorn worker under wrk (docs/performance-history.md, "Creates") put a create's Python
in the hop onto the lane and back, resolving the URL, ninja's dispatch, the agent's ORM read,
compiling and running the transaction's statements and Django's transaction wrappers. Here
ApiHandler (handler.py) serves the plain successful create of `POST /api/v1/agents/{id}/execute`
and `POST /api/v1/executions` on the loop, as loopread.py does for the polled reads:

- the key from this process's key cache only (no query), and the reviewer role;
- the rate limit's in-process admission only (a dict update);
- the body parsed by orjson and validated by the route's own schema (ExecuteIn/ExecutionIn),
  the Idempotency-Key checked as `agents.start` checks it;
- the agent (with its current version) from this process's cache, filled by the thread
  path's `start` (`remember`); the INSERT re-checks what the cache says about it (live, in
  this workspace, same type, same current version, same name when named), so a stale entry
  only sends the request down the full path (and is dropped), never starts a run the full
  path would refuse. Versions are immutable, so the cached input schema cannot go stale;
- services/loopstarts.py: the row and its `init` entry in ONE statement on an autocommit
  async connection of this loop (one transaction, flushed at commit like any other), with
  the other creates that arrived while the loop's previous statements ran (StartBatches:
  each create's row and entry together or not at all), the live event and the wake-up after;
- the route's own reply (`data(execution_out(…), 201)`) through the API middleware chain
  minus the admitted rate limit, as loopread.py does.

Anything else (no cached key or agent, a lower role, `sync` or `version_id` given, invalid
input, an Idempotency-Key already used, every loop connection busy, any error before the
statement committed, a statement the server refused) returns False having written and sent
nothing: the admission is refunded and the request takes the thread path and ninja as
before, so its error bodies are ninja's. tests/executions/test_api_loopcreate.py sends the
same requests both ways; tests/test_create_batches.py covers the batches.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest
from pydantic import BaseModel

from executions import serializers
from executions.api import schemas as s
from executions.api.common import REVIEWER, data
from executions.api.loopread import RESPONSE
from executions.auth import CachedKeyAuth
from executions.models import Agent, role_at_least
from executions.services.loopstarts import (
    LoopStart,
    StartUnknown,
    loop_start_new,
    loop_starts_insert,
)
from executions.validation import text_problem

logger = logging.getLogger("steward.http")

# Agents seen by this process's creates, by (workspace id, the reference as sent). The entry
# is re-checked by every INSERT that uses it, so its age matters only for memory.
AGENT_CACHE_SECONDS = 60.0
AGENT_CACHE_MAX = 10_000
_agents: dict[tuple[Any, str], tuple[float, Agent, bool]] = {}
_agents_lock = threading.Lock()


def remember(workspace: Any, ref: str, agent: Agent) -> None:
    """The thread path's `start` found `agent` for `ref`: cache it for the loop's creates.
    An agent found by name is cached only when `ref` is not an id (the full path tries the
    id first, and a later agent could take that id)."""
    by_name = str(agent.pk) != ref
    if by_name and _looks_like_id(ref):
        return
    if agent.current_version_id is not None and not Agent.current_version.is_cached(agent):
        return  # the loop may not query for it
    with _agents_lock:
        if len(_agents) >= AGENT_CACHE_MAX:
            _agents.clear()
        _agents[(workspace.pk, ref)] = (time.monotonic() + AGENT_CACHE_SECONDS, agent, by_name)


def forget(workspace: Any, ref: str) -> None:
    with _agents_lock:
        _agents.pop((workspace.pk, ref), None)


def _cached(workspace: Any, ref: str) -> tuple[Agent, bool] | None:
    hit = _agents.get((workspace.pk, ref))
    if hit is None or hit[0] <= time.monotonic():
        return None
    return hit[1], hit[2]


def _looks_like_id(ref: str) -> bool:
    try:
        uuid.UUID(ref)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class LoopCreate:
    """A create route on the loop: its body schema and where the agent reference is."""

    schema: type[BaseModel]
    ref_in_path: bool  # `/agents/{agent_id}/execute`; else the body's `agent_id`


NATIVE_CREATES = {
    "api:agent_execute": LoopCreate(s.ExecuteIn, ref_in_path=True),
    "api:execution_create": LoopCreate(s.ExecutionIn, ref_in_path=False),
}

_auth = CachedKeyAuth()


class LoopCreates:
    def __init__(self, handler, creates: dict[str, LoopCreate], loop_reads) -> None:
        self.handler = handler
        self.creates = creates
        # The reads' middleware chain, limiter and connections: one set per process.
        self.chain = loop_reads.chain
        self.limiter = loop_reads.limiter
        self.connections = loop_reads.connections
        self.batches = StartBatches(self.connections, settings.API_LOOP_CREATE_STATEMENTS)
        self.served: Counter[str] = Counter()

    async def serve(self, scope, send, match, body: bytes) -> bool:
        """Create on the loop and return True, or return False having written and sent
        nothing."""
        route = self.creates.get(match.view_name)
        if route is None or scope["method"] != "POST":
            return False
        handler, token, who = self.handler, None, None
        try:
            request, _ = handler.create_request(scope, io.BytesIO(body))
            if request is None:
                return False
            request.resolver_match = match
            parsed = self._parse(request, route, match, body)
            if parsed is None:
                return False
            ref, fields, key = parsed
            found = _cached(request.workspace, ref)
            if found is None:
                return False
            agent, by_name = found
            if self.limiter is not None:
                who = self.limiter.identity(request)
                token = self.limiter.admit_here(who)
                if not token:
                    return False
            execution = await self._start(request, agent, by_name, fields, key)
            if execution is None:
                forget(request.workspace, ref)  # the full path reads it afresh
                self._refund(who, token)
                return False
        except StartUnknown:
            raise  # it may have committed: answering it again could start a second run
        except Exception:  # noqa: BLE001 - nothing written: the thread path answers it
            self._refund(who, token)
            return False
        # Committed: from here the run exists, so errors are answered, never handed on.
        response = data(serializers.execution_out(execution), status=201)
        setattr(request, RESPONSE, response)
        response = self.chain.get_response(request)
        response._handler_class = handler.__class__
        self.served[match.view_name] += 1
        await handler.send_response(response, send)
        response.close()
        return True

    def _parse(self, request: HttpRequest, route: LoopCreate, match, body: bytes):
        """(agent reference, validated body, Idempotency-Key) when the full path would start
        a run from this request without waiting, else None."""
        if not _auth(request) or not role_at_least(request.role, REVIEWER):
            return None
        request._ninja_csrf_exempt = True  # what ninja's operation sets before a view
        fields = route.schema.model_validate(orjson.loads(body))
        if fields.sync or fields.version_id:
            return None
        key = request.headers.get("Idempotency-Key") or None
        if key is not None and text_problem(key, max_length=200) is not None:
            return None
        ref = match.kwargs.get("agent_id") if route.ref_in_path else fields.agent_id
        if not isinstance(ref, str) or text_problem(ref, max_length=200) is not None:
            return None
        return ref, fields, key

    async def _start(self, request, agent: Agent, by_name: bool, fields, key):
        start = loop_start_new(
            workspace=request.workspace,
            agent=agent,
            by_name=by_name,
            input=fields.input,
            metadata=fields.metadata,
            session_id=fields.session_id,
            idempotency_key=key,
            actor=request.actor,
        )
        return start.execution if await self.batches.insert(start) else None

    def _refund(self, who, token) -> None:
        if token:
            self.limiter.refund(who, token)


class StartBatches:
    """The loop's creates in few statements: at most `statements` INSERTs in flight per loop;
    the creates that arrive meanwhile wait and go together in the next one (up to BATCH_MOST).
    A lone create goes at once. PostgreSQL's work per statement (opening the tables and ~30
    indexes, the commit and its flush) and psycopg's are shared by the batch; fewer backends
    compete with the web processes for the cores (docs/performance-history.md, "Create tail")."""

    BATCH_MOST = 32

    def __init__(self, connections, statements: int) -> None:
        self.connections = connections
        self.statements = max(1, statements)
        self._loops: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    async def insert(self, start: LoopStart) -> bool:
        """Whether `start` was written (committed); False: not written, the full path
        answers it. Raises what the statement raised (StartUnknown: it may have committed)."""
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            # Waiting (start, future) pairs; statements in flight; their tasks (held here:
            # the loop keeps only weak references to tasks).
            state = self._loops[loop] = [deque(), 0, set()]
        done = loop.create_future()
        state[0].append((start, done))
        if state[1] < self.statements:
            self._launch(loop, state)
        return await done

    def _launch(self, loop, state: list) -> None:
        waiting, batch = state[0], []
        while waiting and len(batch) < self.BATCH_MOST:
            start, done = waiting.popleft()
            if not done.done():  # a cancelled request's start is not written
                batch.append((start, done))
        if batch:
            state[1] += 1
            task = loop.create_task(self._run(loop, state, batch))
            state[2].add(task)
            task.add_done_callback(state[2].discard)

    async def _run(self, loop, state: list, batch: list) -> None:
        try:
            written = await self._write([start for start, _ in batch])
        except Exception as exc:  # noqa: BLE001 - each create answers (or hands on) it
            for _, done in batch:
                if not done.done():
                    done.set_exception(exc)
        except BaseException:  # cancelled (the loop is closing): so are its creates
            for _, done in batch:
                done.cancel()
            raise
        else:
            for (_, done), ok in zip(batch, written, strict=True):
                if not done.done():
                    done.set_result(ok)
        finally:
            state[1] -= 1
            if state[0]:
                self._launch(loop, state)

    async def _write(self, starts: list[LoopStart]) -> list[bool]:
        conn = await self.connections.lease()
        if conn is None:
            return [False] * len(starts)
        ok = False
        try:
            written = await loop_starts_insert(conn, self.connections.db, starts)
            ok = True
        finally:
            self.connections.release(conn, ok)
        return written
