"""The polled reads' fast path (executions/api/fastpath.py) keeps the contract byte for byte:
the same requests through ApiHandler with and without the fast reads give the same status,
headers and body, whether found, missing, another workspace's, malformed, unauthenticated,
revoked, read by a viewer, rate limited or sent with another method; and the successful reads
really are served by the fast path (Discuro's retrieve, a plain view, answers everything there)."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from django.db import connection

from config.asgi import FAST_READS, LOOP_READS, django_app
from executions import auth, services
from executions.api.handler import ApiHandler
from executions.api.loopread import LoopConnections
from executions.models import ApiKey

MISSING = "01a2287a-81c7-75a6-b24d-849799f7e5ef"


def call(handler, method: str, path: str, query: str = "", headers=(), departed=False) -> tuple:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [
            (b"host", b"testserver"),
            *((k.lower().encode(), v.encode()) for k, v in headers),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent = []

    async def receive():
        if departed:
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    async def run():
        await handler(scope, receive, send)
        await handler.aclose()  # this loop's async connections (the event-loop reads)

    asyncio.run(run())
    if departed:
        return sent
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    # The seconds a 429 asks to wait may tick between two calls.
    headers = [(k, b"N" if k.lower() == b"retry-after" else v) for k, v in start["headers"]]
    return start["status"], sorted(headers), _steady(body)


def _steady(body: bytes) -> bytes:
    """Moderately's error bodies carry a timestamp and a request id, and a 429 the seconds to
    wait: equal in meaning, not in bytes, between two calls."""
    try:
        value = json.loads(body)
    except ValueError:
        return body
    if isinstance(value, dict):
        for key in ("timestamp", "request_id"):
            value.pop(key, None)
    return re.sub(rb"\b\d+ s\b|\"retry_after\":\d+", b"N", json.dumps(value).encode())


class Counting:
    def __init__(self, read) -> None:
        self.read, self.served = read, 0

    def __call__(self, request, *args, **kwargs):
        response = self.read(request, *args, **kwargs)
        self.served += response is not None
        return response


@pytest.fixture(params=[False, True], ids=["thread", "loop"])
def loop(request, transactional_db):
    """Each test with the fast reads on the lanes, and on PostgreSQL also with their
    successful case on the event loop (executions/api/loopread.py)."""
    if request.param and connection.vendor != "postgresql":
        pytest.skip("the event-loop reads are PostgreSQL-only")
    return request.param


def handlers(loop=False):
    fast = {name: Counting(read) for name, read in FAST_READS.items()}
    handler = ApiHandler(
        fallback=django_app, fast_reads=fast, loop_reads=LOOP_READS if loop else None
    )
    assert (handler.loop is not None) == loop
    return handler, ApiHandler(fallback=django_app), fast


def served(handler, reads, name: str) -> int:
    """Successful reads the fast path answered, on a lane or on the loop."""
    return reads[name].served + (handler.loop.served[name] if handler.loop else 0)


def both(fast, slow, *args, **kwargs):
    one, other = call(fast, *args, **kwargs), call(slow, *args, **kwargs)
    assert one == other, args
    return one


@pytest.fixture
def world(transactional_db, owner, viewer, outsider, agent):
    mine, _ = services.execution_start(workspace=owner.workspace, agent=agent, input={"n": 2})
    theirs_agent = services.agent_create(workspace=outsider.workspace, name="x", type="external")
    theirs, _ = services.execution_start(workspace=outsider.workspace, agent=theirs_agent, input={})
    revoked, raw = services.apikey_create(workspace=owner.workspace, name="gone", role="admin")
    services.apikey_revoke(workspace=owner.workspace, prefix=revoked.prefix)
    assert ApiKey.objects.get(pk=revoked.pk).revoked_at is not None
    return {"mine": str(mine.pk), "theirs": str(theirs.pk), "revoked": raw}


def test_every_native_read_answers_as_ninja_does(world, owner, viewer, loop):
    fast, slow, reads = handlers(loop)
    mine, path = world["mine"], "/api/v1/executions/"
    key = [("X-API-Key", owner.key)]
    found = both(fast, slow, "GET", path + mine, headers=key)
    assert found[0] == 200 and json.loads(found[2])["data"]["id"] == mine
    assert {k.lower() for k, _ in found[1]} >= {b"content-security-policy", b"x-frame-options"}
    both(
        fast,
        slow,
        "GET",
        path + mine,
        query="x=1",
        headers=[("Authorization", "Bearer " + owner.key)],
    )
    both(fast, slow, "GET", path + mine, headers=[("X-API-Key", viewer.key)])
    assert served(fast, reads, "api:execution_get") == 3
    assert [t.view_name for _, t in fast._shapes] == ["api:execution_get"]  # learned once
    inbox = both(fast, slow, "GET", path + "approval-inbox", headers=key)  # a literal route
    assert inbox[0] == 200 and "data" in json.loads(inbox[2])
    for case in (
        MISSING,
        world["theirs"],
        "nope",
        "%00",
        "-" * 190 + mine,
        mine.upper(),
        "{" + mine + "}",
    ):
        both(fast, slow, "GET", path + case, headers=key)
    for headers in ([], [("X-API-Key", "sk-wrong")], [("X-API-Key", world["revoked"])]):
        assert both(fast, slow, "GET", path + mine, headers=headers)[0] == 401
    for method in ("HEAD", "POST", "PUT", "DELETE", "OPTIONS"):
        both(fast, slow, method, path + mine, headers=key)


def test_the_faces_reads_answer_as_ninja_does(world, owner, loop):
    fast, slow, reads = handlers(loop)
    mine, bearer = world["mine"], [("Authorization", "Bearer " + owner.key)]
    julep = "/julep/executions/"
    assert both(fast, slow, "GET", julep + mine, headers=bearer)[0] == 200
    both(fast, slow, "GET", julep + mine, headers=[("X-API-Key", owner.key)])
    assert served(fast, reads, "julep:execution_get") == 2
    for case in (MISSING, world["theirs"], "nope", "-" * 40 + mine):
        both(fast, slow, "GET", julep + case, headers=bearer)
    for headers in ([], [("Authorization", "Bearer " + world["revoked"])]):
        assert both(fast, slow, "GET", julep + mine, headers=headers)[0] == 401
    for method in ("HEAD", "PUT", "DELETE"):
        both(fast, slow, method, julep + mine, headers=bearer)

    moderately = "/moderately/agent-executions/"
    workspace = owner.workspace
    for query in (
        "",
        f"teamIds={workspace.pk}",
        f"teamIds={workspace.slug}",
        f"teamIds=x,{workspace.pk.hex}",
    ):
        assert both(fast, slow, "GET", moderately + mine, query=query, headers=bearer)[0] == 200
    assert served(fast, reads, "moderately:execution_retrieve") == 4
    for query in ("teamIds=other", "teamIds=" + "a" * 201, "teamIds=%00"):
        both(fast, slow, "GET", moderately + mine, query=query, headers=bearer)
    for case in (MISSING, world["theirs"], "nope"):
        both(fast, slow, "GET", moderately + case, headers=bearer)
    assert both(fast, slow, "GET", moderately + mine)[0] == 401
    both(fast, slow, "POST", moderately + mine, headers=bearer)

    discuro = "/discuro/v1/executions/retrieve"
    for path in (discuro, "/discuro//v1/executions/retrieve"):
        assert both(fast, slow, "POST", path, query=f"id={mine}", headers=bearer)[0] == 200
    assert served(fast, reads, "discuro-retrieve") == 2  # on the loop too, on PostgreSQL
    assert set(fast._paths) == {discuro, "/discuro//v1/executions/retrieve"}
    for query in (f"id={MISSING}", f"id={world['theirs']}", "id=nope", "", f"ID={mine}"):
        both(fast, slow, "POST", discuro, query=query, headers=bearer)
    assert both(fast, slow, "POST", discuro, query=f"id={mine}")[0] == 401
    assert both(fast, slow, "GET", discuro, query=f"id={mine}", headers=bearer)[0] == 405


def test_a_rate_limited_read_is_the_same_429(world, owner, settings, loop):
    settings.RATE_LIMIT = "3/minute"
    settings.RATE_LIMIT_STORAGE = "memory://"
    for path, headers in (
        ("/api/v1/executions/", [("X-API-Key", owner.key)]),
        ("/julep/executions/", [("Authorization", "Bearer " + owner.key)]),
        ("/moderately/agent-executions/", [("Authorization", "Bearer " + owner.key)]),
    ):
        fast, slow, reads = handlers(loop)  # each with its own counter, built under these settings
        statuses = [
            both(fast, slow, "GET", path + world["mine"], headers=headers)[0] for _ in range(4)
        ]
        assert statuses == [200, 200, 200, 429]


def test_the_loop_admits_from_the_process_batch_and_counts_like_the_lanes(world, owner, settings):
    """A limit with a local batch (100 a minute: 2 calls a process may admit on its own): the
    loop admits those, the shared counter still sees every call, and the 101st is refused
    on both paths, the same call."""
    if connection.vendor != "postgresql":
        pytest.skip("the event-loop reads are PostgreSQL-only")
    settings.RATE_LIMIT = "100/minute"
    settings.RATE_LIMIT_STORAGE = "memory://"
    fast, slow, reads = handlers(loop=True)
    path, key = "/api/v1/executions/" + world["mine"], [("X-API-Key", owner.key)]
    statuses = [both(fast, slow, "GET", path, headers=key)[0] for _ in range(104)]
    # Calls admitted locally reach the counter with the next shared hit: a batch's overshoot.
    assert statuses[:100] == [200] * 100 and statuses[-1] == 429
    assert fast.loop.served["api:execution_get"] > 30


def test_a_revoked_key_is_refused_on_the_loop_as_on_the_lanes(world, owner):
    """Revoked here: the key cache is cleared at once. Revoked in another process (no signal
    here): both paths keep the cached key until its KEY_CACHE_SECONDS run out."""
    if connection.vendor != "postgresql":
        pytest.skip("the event-loop reads are PostgreSQL-only")
    fast, slow, reads = handlers(loop=True)
    path = "/api/v1/executions/" + world["mine"]
    for revoke in ("here", "elsewhere"):
        key, raw = services.apikey_create(workspace=owner.workspace, name=revoke, role="admin")
        headers = [("X-API-Key", raw)]
        assert both(fast, slow, "GET", path, headers=headers)[0] == 200  # fills the cache
        before = fast.loop.served["api:execution_get"]
        assert both(fast, slow, "GET", path, headers=headers)[0] == 200
        assert fast.loop.served["api:execution_get"] == before + 1  # the cached key, on the loop
        if revoke == "here":
            services.apikey_revoke(workspace=owner.workspace, prefix=key.prefix)
        else:
            ApiKey.objects.filter(pk=key.pk).update(revoked_at=key.created_at)
            assert both(fast, slow, "GET", path, headers=headers)[0] == 200  # still cached
            for digest, (_, cached) in list(auth._keys.items()):
                auth._keys[digest] = (0.0, cached)  # its seconds are up
        assert both(fast, slow, "GET", path, headers=headers)[0] == 401
        assert fast.loop.served["api:execution_get"] == before + 1 + (revoke != "here")


def test_a_departed_client_gets_nothing_on_either_path(world, owner, loop):
    fast, slow, _ = handlers(loop)
    path, key = "/api/v1/executions/" + world["mine"], [("X-API-Key", owner.key)]
    assert call(fast, "GET", path, headers=key, departed=True) == []
    assert call(slow, "GET", path, headers=key, departed=True) == []


def test_a_read_that_finds_every_loop_connection_busy_waits_for_one(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("the event-loop reads are PostgreSQL-only")
    pool = LoopConnections(size=1)

    async def run():
        first = await pool.lease()
        waiting = asyncio.ensure_future(pool.lease())
        await asyncio.sleep(0)
        assert not waiting.done()
        pool.release(first, ok=True)
        second = await waiting
        assert second is first
        pool.release(second, ok=False)  # broken: closed, its place freed
        third = await pool.lease()
        assert third is not first
        pool.release(third, ok=True)
        await asyncio.sleep(0.05)  # the broken one's close
        assert first.closed
        await pool.aclose()

    asyncio.run(run())
