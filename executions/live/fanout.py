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
import uuid
from collections import OrderedDict
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from channels.db import database_sync_to_async
from django.db.models.fields.json import KeyTransform
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
            self.made += 1
            self.entries[key] = flight
            self.entries.move_to_end(key)
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
    """A message's content as a hashable key (its values are ids, strings and numbers)."""
    return tuple(sorted((k, json.dumps(v, sort_keys=True)) for k, v in message.items()))


# --- list rows ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowChange:
    """One execution as loaded for a change, with its row fragment in both forms."""

    execution: Any
    in_place: str  # replaces the row where the page shows it
    insert: str  # puts the row on top of a page that does not show it yet


def load_row(*, workspace_id: Any, execution_id: Any) -> RowChange | None:
    execution = (
        Execution.objects.select_related("agent", "agent_version", "workspace")
        .filter(pk=execution_id, workspace_id=workspace_id)
        .first()
    )
    if execution is None:
        return None
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
    """Whether `execution` is in the list `filters` (selectors.ExecutionFilters) select, decided
    in memory like selectors.execution_list would in SQL. None when a filter cannot be decided
    here (a metadata path ending in a lookup, say): the caller asks the database."""
    if filters.status and execution.status not in filters.status:
        return False
    if filters.agent_id and not _same_id(execution.agent_id, filters.agent_id):
        return False
    if filters.session_id and execution.session_id != filters.session_id:
        return False
    if filters.created_after and not _aware(execution.created_at) >= filters.created_after:
        return False
    if filters.created_before and not _aware(execution.created_at) < filters.created_before:
        return False
    if filters.cost_above is not None and not (
        execution.cost is not None and Decimal(execution.cost) > filters.cost_above
    ):
        return False
    if filters.parent_id and not _same_id(execution.parent_id, filters.parent_id):
        return False
    undecided = False
    for key, value in (filters.metadata or {}).items():
        found = _metadata_matches(execution.metadata, key, value)
        if found is False:
            return False
        undecided = undecided or found is None
    if filters.q and not _text_matches(execution, filters.q):
        return False
    return None if undecided else True


def _same_id(value: Any, wanted: str) -> bool:
    if value is None:
        return False
    try:
        return uuid.UUID(str(value)) == uuid.UUID(str(wanted))
    except ValueError:
        return False


def _aware(moment: datetime) -> datetime:
    return timezone.make_aware(moment, timezone.UTC) if timezone.is_naive(moment) else moment


def _json_lookups() -> set[str]:
    return set(KeyTransform.get_lookups())


def _metadata_matches(metadata: Any, key: str, value: str) -> bool | None:
    """`metadata__<key>=<value>` as the selector builds it: `a__b` is a nested path, a number
    or boolean compares as JSON, anything else as a string."""
    path = key.split("__")
    if len(path) > 1 and path[-1] in _json_lookups():
        return None
    current = metadata
    for part in path:
        if isinstance(current, dict):
            if part.isdigit():
                return None  # the database reads a number as an array index here
            if part not in current:
                return False
            current = current[part]
        elif isinstance(current, list) and part.isdigit():
            index = int(part)
            if index >= len(current):
                return False
            current = current[index]
        else:
            return False
    wanted = selectors.metadata_value(value)
    if isinstance(wanted, bool) or isinstance(current, bool):
        return isinstance(wanted, bool) and isinstance(current, bool) and wanted is current
    if isinstance(wanted, (int, float)):
        return isinstance(current, (int, float)) and current == wanted
    return isinstance(current, str) and current == wanted


def _text_matches(execution: Any, q: str) -> bool:
    if execution.session_id == q:
        return True
    if q.casefold() in (execution.agent.name or "").casefold():
        return True
    compact = q.replace("-", "").lower()
    if compact and all(c in "0123456789abcdef" for c in compact):
        if len(compact) == 32:
            return execution.pk == uuid.UUID(compact)
        return (execution.trace_id or "").startswith(compact)
    return False


def row_matches_in_database(execution: Any, filters: Any) -> bool:
    return selectors.execution_matches(execution=execution, filters=filters)


# --- approvals badge ---------------------------------------------------------------------------


def nav_count_html(*, workspace_id: Any) -> str:
    count = Approval.objects.filter(workspace_id=workspace_id).pending().count()
    return render_to_string("approvals/_nav_count.html", {"nav_count": count, "oob": True})
