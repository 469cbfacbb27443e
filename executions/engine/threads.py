"""Running engine code on threads: the event-loop binding a new thread needs in the embedded
topology, handing a database connection back before a long wait, and whether branches may
run on threads at all."""

from __future__ import annotations

from collections.abc import Callable

from asgiref.sync import SyncToAsync
from django.db import connection


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
