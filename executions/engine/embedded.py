"""The embedded topology: the worker runs inside the web process, on the server's event loop.

The in-memory channel layer only reaches its own process and must be touched from its own
loop, so the worker is started on that loop as `sync_to_async(worker_loop,
thread_sensitive=False)`: its `async_to_sync(group_send)` calls are routed back to this loop
by asgiref (DESIGN.md §2).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from django.conf import settings

logger = logging.getLogger("steward.engine")

_current: Any = None  # (worker, task) of the worker running on the current server loop
# Ctrl-C on `make up`: runs get this long to reach a step boundary, then are handed back.
GRACE_SECONDS = 10.0


def ensure_started() -> None:
    """Start the embedded worker on the running loop, once per server (no-op when disabled)."""
    global _current
    if _current is not None or not settings.EMBEDDED_WORKER:
        return
    # Imported on start only: the worker module brings the providers and tools along, which a
    # web process without an embedded worker (production) never needs.
    from asgiref.sync import sync_to_async

    from executions.engine import worker

    loop = asyncio.get_running_loop()
    embedded = worker.Worker(
        concurrency=settings.WORKER_CONCURRENCY, name="embedded", grace_seconds=GRACE_SECONDS
    )
    task = loop.create_task(sync_to_async(embedded.run, thread_sensitive=False)())
    _current = (embedded, task)
    task.add_done_callback(_report)
    logger.info("embedded worker started (concurrency %s)", settings.WORKER_CONCURRENCY)


async def stop(timeout: float = GRACE_SECONDS + 5.0) -> None:
    """Stop the embedded worker (server shutdown): it hands back what it holds and returns."""
    global _current
    if _current is None:
        return
    embedded, task = _current
    embedded.stop()
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout=timeout)
    except (TimeoutError, asyncio.CancelledError):
        logger.warning("embedded worker did not stop within %ss", timeout)
    except Exception:  # noqa: BLE001 - reported by _report
        pass
    _current = None


def stop_and_wait(timeout: float = GRACE_SECONDS + 5.0) -> bool:
    """From a thread other than the server loop's (which must keep running: the worker's
    live events route through it): stop the embedded worker and wait until it has handed
    back what it holds. True if it stopped in time."""
    current = _current
    if current is None:
        return True
    embedded = current[0]
    embedded.stop()
    return embedded.wait_stopped(timeout)


def _report(task: asyncio.Task) -> None:
    global _current
    # The worker ends with its server; the next server in this process starts anew.
    if _current is not None and _current[1] is task:
        _current = None
    if not task.cancelled() and task.exception() is not None:
        logger.error("embedded worker stopped", exc_info=task.exception())


class EmbeddedWorkerLifespan:
    """ASGI wrapper: starts the embedded worker at lifespan startup (uvicorn) or on the first
    connection (daphne, which has no lifespan protocol), and stops it at lifespan shutdown."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    ensure_started()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await stop()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        ensure_started()
        await self.app(scope, receive, send)
