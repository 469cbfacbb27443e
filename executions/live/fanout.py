"""What the live sockets of one process share: each change is loaded and rendered once.

A group message reaches every socket of a page kind in the process; without sharing, each
socket would re-read the same row and render the same fragment. `Shared.get` is a single-flight
cache: the first socket to handle a message starts one load+render on a small thread pool and
the others await the same result. Per socket there is then only in-memory work: whether the row
matches the page's filters (`row_matches`) and the `send`.

Sharing never crosses what differs between sockets: keys carry the workspace, and fragments that
depend on the viewer (a decision panel, an inbox item) carry the user and role too.

Keys are built from the message. A transition id is unique, so every socket shares the one
load of that change. An approval message (`approval_id`, `status`) can repeat with the same
content for a later change (a second vote, a comment), so there a socket only shares a load that
began after it received its message — after the change was committed; a new load waits
`GATHER` seconds for the other sockets' copies of the message to arrive and join it. Entries
expire after `TTL` seconds.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

from channels.db import database_sync_to_async
from django.template.loader import render_to_string
from django.utils import timezone

from approvals.models import Approval
from executions import selectors
from executions.models import Execution
from executions.pages.contexts import RANGES, list_params, row_html

logger = logging.getLogger("steward.live")

TTL = 5.0
MAX_ENTRIES = 4096
GATHER = 0.005

# Renders are read-only: they run on their own threads (each with its own database connection,
# returned after every call) instead of queueing on Django's one thread for sync code, where
# sync views — the Approve POST — would wait behind them.
_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="steward-live")


def in_thread(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` as a coroutine run on the live threads, closing stale database connections around
    it like `database_sync_to_async`."""
    return database_sync_to_async(fn, thread_sensitive=False, executor=_executor)


class Flight:
    __slots__ = ("task", "started", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.started: float | None = None  # when the load began; None while gathering
        self.task: asyncio.Task | None = None


class Shared:
    """Single-flight, short-lived results per process (see the module docstring)."""

    def __init__(self, ttl: float = TTL, max_entries: int = MAX_ENTRIES) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.entries: OrderedDict[Hashable, Flight] = OrderedDict()
        self.made = 0  # how many loads/renders ran (tests and benchmarks read it)
        # Loads under way: the process's fan-out waits for them before it hands the message
        # to the next sockets, which then find the result ready (executions.live.layer).
        self.running: set[asyncio.Task] = set()

    async def get(
        self,
        key: Hashable,
        make: Callable[[], Any],
        *,
        fresh_after: float | None = None,
        gather: float = 0.0,
    ) -> Any:
        """The result of `make()` (a sync function, run on the live threads) for `key`.

        With `fresh_after` (a `time.monotonic()` taken when the socket got its message, so
        after the change was committed), only a load that begins after that moment is shared;
        a new one waits `gather` seconds for the other sockets to join before it begins.
        Returns None when `make` failed (logged once, not per socket)."""
        loop = asyncio.get_running_loop()
        self._prune(time.monotonic())
        flight = self.entries.get(key)
        if (
            flight is None
            or flight.loop is not loop
            or (
                fresh_after is not None
                and flight.started is not None
                and flight.started < fresh_after
            )
        ):
            flight = Flight(loop)
            flight.task = loop.create_task(self._run(key, make, flight, gather))
            self.running.add(flight.task)
            flight.task.add_done_callback(self.running.discard)
            self.made += 1
            self.entries[key] = flight
            self.entries.move_to_end(key)
        if flight.task.done():  # the common case in a fan-out: no future, no suspension
            return flight.task.result()
        # A socket that closes while waiting must not cancel the load the others await.
        return await asyncio.shield(flight.task)

    async def _run(self, key: Hashable, make: Callable[[], Any], flight: Flight, gather: float):
        if gather:
            await asyncio.sleep(gather)
        flight.started = time.monotonic()
        try:
            return await in_thread(make)()
        except Exception:  # noqa: BLE001 - one bad render must not kill the page's sockets
            logger.exception("live render failed for %r", key)
            return None

    def _prune(self, now: float) -> None:
        while self.entries:
            flight = next(iter(self.entries.values()))
            started = flight.started if flight.started is not None else now
            if now - started <= self.ttl and len(self.entries) <= self.max_entries:
                break
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()


shared = Shared()


def message_key(message: dict[str, Any]) -> tuple:
    """A message's content as a hashable key (its values are ids, strings and numbers; keys
    the process added, like the layer's arrival time, start with "_" and are left out)."""
    key = tuple(sorted((k, v) for k, v in message.items() if not k.startswith("_")))
    try:
        hash(key)
        return key
    except TypeError:  # an unhashable or unorderable value (a stream event's data)
        return tuple(
            sorted(
                (k, json.dumps(v, sort_keys=True))
                for k, v in message.items()
                if not k.startswith("_")
            )
        )


# --- list rows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowChange:
    """One execution as loaded for a change, with its row fragment in both forms."""

    execution: Any
    in_place: str  # replaces the row where the page shows it
    insert: str  # puts the row on top of a page that does not show it yet


def load_row(*, workspace_id: Any, execution_id: Any) -> RowChange | None:
    # By primary key, so no ORDER BY (`.first()` would add one, and compiling it was a
    # visible part of a server's time in a profile at 1,000 sockets).
    found = list(
        Execution.objects.select_related("agent", "agent_version", "workspace")
        .filter(pk=execution_id, workspace_id=workspace_id)
        .order_by()[:1]
    )
    if not found:
        return None
    execution = found[0]
    return RowChange(
        execution=execution,
        in_place=row_html(execution, upsert=False),
        insert=row_html(execution, upsert=True),
    )


@dataclass(frozen=True)
class ListFilters:
    """A list page's filters, parsed once when its socket connects. `moving` is the "last N"
    range, re-applied to the clock at each match."""

    filters: Any  # selectors.ExecutionFilters
    moving: Any = None  # a timedelta, or None

    @classmethod
    def from_params(cls, params: Any) -> ListFilters:
        """Raises ValidationFailed for filters the page itself shows as an error."""
        parsed, state = list_params(params)
        return cls(selectors.ExecutionFilters.from_params(parsed), RANGES.get(state["range"]))

    def now(self) -> Any:
        if self.moving is None:
            return self.filters
        return replace(self.filters, created_after=timezone.now() - self.moving)


def row_matches(execution: Any, filters: Any) -> bool | None:
    """Whether `execution` is in the list `filters` select, in memory (None: ask the database).
    The one matcher lives in the selectors, beside the SQL it mirrors."""
    return selectors.execution_matches_in_memory(execution=execution, filters=filters)


def row_matches_in_database(execution: Any, filters: Any) -> bool:
    return selectors.execution_matches(execution=execution, filters=filters)


# --- approvals badge ---------------------------------------------------------------------------


def nav_count_html(*, workspace_id: Any) -> str:
    count = Approval.objects.filter(workspace_id=workspace_id).pending().count()
    return render_to_string("approvals/_nav_count.html", {"nav_count": count, "oob": True})
