"""Running engine code on threads: the event-loop binding a new thread needs in the embedded
topology, the worker's gate (how many run threads compute at once), handing a database
connection and a place at the gate back before a long wait, and whether branches may run on
threads at all."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from asgiref.sync import SyncToAsync
from django.db import connection

# The gate this thread holds a place at, if any (set by Gate.held, lent out by long_wait).
_place = threading.local()


class Gate:
    """At most `size` of a worker's run threads compute at once; the others wait, blocked.

    Why: a thousand runs waiting on a slow model are a thousand threads, and when their replies
    come back (or a backlog is claimed at once) hundreds of them become runnable together. The
    GIL then serves each in turn, so a thread holding a pooled database connection waits
    seconds for the GIL between two round trips, the pool's other waiters time out (10 s), and
    runs are paused, their leases lost, their model calls repeated
    (docs/performance-history.md, "Runs in flight"). A thread waiting here is blocked, not
    runnable: the few that hold a place get the GIL at once, hold their connection for
    milliseconds, and the pool is never starved.
    A run gives its place back during a wait on the outside world (`long_wait`).
    """

    def __init__(self, size: int) -> None:
        self.size = max(1, int(size))
        self._free = threading.Semaphore(self.size)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Run the block with a place at the gate (a run thread, from claim to end)."""
        self._free.acquire()
        _place.gate = self
        try:
            yield
        finally:
            if getattr(_place, "gate", None) is self:
                _place.gate = None
                self._free.release()


@contextmanager
def long_wait() -> Iterator[None]:
    """Around a wait on the outside world (a model's reply): hand back this thread's database
    connection and its place at the worker's gate, and take a place again afterwards."""
    release_db_connection()
    gate = getattr(_place, "gate", None)
    if gate is None:
        yield
        return
    _place.gate = None
    gate._free.release()
    try:
        yield
    finally:
        gate._free.acquire()
        _place.gate = gate


def loop_binding() -> Callable[[], None]:
    """An initializer that gives a new thread this thread's asgiref main loop.

    In the embedded topology the worker runs under the server's loop; `async_to_sync(group_send)`
    must route back to that loop (the in-memory channel layer lives there), and asgiref finds it
    through a thread-local, which new threads do not inherit.
    """
    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    pid = getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None)

    def bind() -> None:
        if loop is not None:
            SyncToAsync.threadlocal.main_event_loop = loop
            SyncToAsync.threadlocal.main_event_loop_pid = pid

    return bind


def release_db_connection() -> None:
    """Hand this thread's database connection back to the pool before a long wait (a model or
    tool call), so N executions waiting on I/O do not hold N connections. Only with a pool:
    without one, closing would just cost a reconnect."""
    if connection.in_atomic_block or not connection.settings_dict.get("OPTIONS", {}).get("pool"):
        return
    connection.close()


def serial_db() -> bool:
    """Branches run one after another when threads cannot share the database: inside a
    transaction (other connections cannot see its rows), or on in-memory SQLite (the test
    default), whose shared-cache table locks fail instead of waiting."""
    if connection.in_atomic_block:
        return True
    return connection.vendor == "sqlite" and connection.is_in_memory_db()


def single_writer_db() -> bool:
    """SQLite: one writer at a time for the whole database, so two locks taken in either order
    by two threads (the database's and one of ours) can deadlock until the busy timeout."""
    return connection.vendor == "sqlite"
