"""Waiting for an execution to settle (finish or park), for sync execute and long polls.

Polls the database with a short, growing interval: it works the same in every topology (the
worker may be in another process or on another machine) and costs one indexed read a poll.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from asgiref.sync import sync_to_async

from executions.lifecycle import PARKED, TERMINAL
from executions.models import Execution

SETTLED = TERMINAL | PARKED


def _load(execution_id: Any) -> Execution:
    return Execution.objects.select_related("agent", "agent_version").get(pk=execution_id)


async def wait_settled(execution_id: Any, *, timeout: float) -> Execution:
    """Return the execution once terminal or parked, or as it is when `timeout` passes."""
    load = sync_to_async(_load)
    deadline = time.monotonic() + max(0.0, timeout)
    delay = 0.01
    while True:
        execution = await load(execution_id)
        if execution.status in SETTLED or time.monotonic() >= deadline:
            return execution
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.25)


def wait_settled_sync(execution_id: Any, *, timeout: float) -> Execution:
    deadline = time.monotonic() + max(0.0, timeout)
    delay = 0.01
    while True:
        execution = _load(execution_id)
        if execution.status in SETTLED or time.monotonic() >= deadline:
            return execution
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 1.5, 0.25)
