"""Following one execution until it settles: the one loop behind the SSE streams, `wait`,
`sync: true` and the compat faces' streams.

It reads the database, not a channel group: the worker may run in another process or on
another machine, a read by primary key is one indexed query, and nothing published before the
follower arrived can be missed. The interval starts short, so a fast run is followed promptly,
grows while nothing changes, and drops back as soon as something does.

A follower gives `follow()` a `step`: one read that returns what it found new (frames to send,
say) and whether it is done. `follow()` yields what each step found, a keep-alive when the
stream has been quiet for a while, and stops when the step says done or the time is up.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import connection

from executions.lifecycle import PARKED, TERMINAL
from executions.models import Execution

SETTLED = TERMINAL | PARKED
MIN_POLL, MAX_POLL, BACKOFF = 0.02, 0.25, 1.5
KEEPALIVE_SECONDS = 15.0

T = TypeVar("T")
Step = Callable[[], Awaitable[tuple[Iterable[T], bool]]]


class Pace:
    """When to read next, when a keep-alive is due and when time is up (one policy for the
    async and the sync follower)."""

    def __init__(self, *, max_seconds: float | None, keepalive: float | None) -> None:
        self.started = self.last_sent = time.monotonic()
        self.deadline = None if max_seconds is None else self.started + max(0.0, max_seconds)
        self.keepalive = keepalive
        self.delay = MIN_POLL

    def found(self, anything: bool) -> None:
        if anything:
            self.delay = MIN_POLL
            self.last_sent = time.monotonic()

    def expired(self) -> bool:
        return self.deadline is not None and time.monotonic() >= self.deadline

    def keepalive_due(self) -> bool:
        if self.keepalive is None or time.monotonic() - self.last_sent < self.keepalive:
            return False
        self.last_sent = time.monotonic()
        return True

    def next_sleep(self) -> float:
        """The pause before the next read (never past the deadline); the one after grows."""
        pause = self.delay
        if self.deadline is not None:
            pause = min(pause, max(0.0, self.deadline - time.monotonic()))
        self.delay = min(self.delay * BACKOFF, MAX_POLL)
        return pause


async def follow(
    step: Step,
    *,
    max_seconds: float | None = None,
    keepalive: Any = None,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
) -> AsyncIterator[Any]:
    """Yield what each `step()` finds until it says done or `max_seconds` pass; yield
    `keepalive` (when given) after `keepalive_seconds` without anything to send.

    The wait between reads is an asyncio.sleep, so an open stream holds no thread."""
    pace = Pace(
        max_seconds=max_seconds, keepalive=keepalive_seconds if keepalive is not None else None
    )
    while True:
        items, done = await step()
        sent = False
        for item in items:
            sent = True
            yield item
        pace.found(sent)
        if done or pace.expired():
            return
        if pace.keepalive_due():
            yield keepalive
        await asyncio.sleep(pace.next_sleep())


# --- waiting until settled (`wait`, `sync: true`) ----------------------------------------------


def _load(execution_id: Any) -> Execution:
    return read_then_release(
        Execution.objects.select_related("agent", "agent_version").get, pk=execution_id
    )


def read_then_release[R](read: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
    """`read(*args, **kwargs)`, then this thread's database connection back to the pool. A
    long poll (`wait`, `sync: true`, an approval's wait) reads every so often for up to
    minutes; its thread kept a pooled connection all along, so sixteen waiting programs held
    the whole pool (DB_POOL_MAX) and every other request waited for one. Not inside a
    transaction (a test's): closing would end it."""
    try:
        return read(*args, **kwargs)
    finally:
        if not connection.in_atomic_block:
            connection.close()


# On the request's own thread for sync code, like the API's other reads (a test's transaction
# is visible there).
_load_async = sync_to_async(_load)


async def wait_settled(execution_id: Any, *, timeout: float) -> Execution:
    """The execution once it is terminal or parked, or as it is when `timeout` passes."""
    seen: list[Execution] = []

    async def step() -> tuple[list[Execution], bool]:
        execution = await _load_async(execution_id)
        seen[:] = [execution]
        return [], execution.status in SETTLED

    async for _ in follow(step, max_seconds=timeout):
        pass
    return seen[0]


def wait_settled_sync(execution_id: Any, *, timeout: float) -> Execution:
    """`wait_settled` for sync callers (scripts, tests), on the same pace without a loop."""
    pace = Pace(max_seconds=timeout, keepalive=None)
    while True:
        execution = _load(execution_id)
        if execution.status in SETTLED or pace.expired():
            return execution
        time.sleep(pace.next_sleep())
