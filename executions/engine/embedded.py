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

_started = False


def ensure_started() -> None:
    """Start the embedded worker once, on the running loop (no-op when disabled)."""
    global _started
    if _started or not settings.EMBEDDED_WORKER:
        return
    _started = True
    from asgiref.sync import sync_to_async

    from executions.engine import worker

    loop = asyncio.get_running_loop()
    embedded = worker.Worker(concurrency=settings.WORKER_CONCURRENCY, name="embedded")
    task = loop.create_task(sync_to_async(embedded.run, thread_sensitive=False)())
    task.add_done_callback(_report)
    logger.info("embedded worker started (concurrency %s)", settings.WORKER_CONCURRENCY)


def _report(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.error("embedded worker stopped", exc_info=task.exception())


class EmbeddedWorkerLifespan:
    """ASGI wrapper: starts the embedded worker at lifespan startup (uvicorn) or on the first
    connection (daphne, which has no lifespan protocol)."""

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
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        ensure_started()
        await self.app(scope, receive, send)
