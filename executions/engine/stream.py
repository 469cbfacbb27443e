"""Streaming events of a run (`execution`, `thinking`, `tool_start`, `tool_end`, `content`,
`done`, `error`): stored as ExecutionEvent rows so a late subscriber gets a replay, and
published once the row is committed. Deltas of a streamed reply are coalesced, so a token is
not a row."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db import transaction

from executions.engine.records import jsonable
from executions.engine.threads import release_db_connection
from executions.live import events
from executions.models import Execution, ExecutionEvent

# Streamed deltas are coalesced into one stored event at most this often.
DELTA_FLUSH_SECONDS = 0.05


class Stream:
    """The streaming part of RunContext. Uses: execution, _lock."""

    execution: Execution
    _lock: threading.RLock

    def _init_stream(self) -> None:
        self._buffer: list[str] = []
        self._buffer_kind: str | None = None
        self._buffer_since = 0.0
        # While a write gathers its events (batched_events), they wait here for one INSERT.
        self._event_batch: list[ExecutionEvent] | None = None
        # Events held back with a model call's record until the run's next write (they are
        # stored there, in order, in its transaction): see RunContext._held_effect.
        self._held_events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, type: str, data: dict[str, Any]) -> None:
        """Store a streamed event and publish it once the row is committed."""
        if self._event_batch is None and getattr(self, "pure_only", False):
            self.gate()  # type: ignore[attr-defined] - an event sent mid-run: not pure
        if self._event_batch is None and getattr(self, "_held_effect", False):
            with self._lock:
                self._held_events.append((type, data))
            return
        event = ExecutionEvent(execution_id=self.execution.pk, type=type, data=jsonable(data))
        # Under the run's lock: a write holds it through its commit, so an event stored here
        # (committed at once) never takes an id below one still uncommitted in another thread
        # of this run; streams that read by id would skip that one for good.
        with self._lock:
            if self._event_batch is not None:
                self._event_batch.append(event)
            else:
                self._store([event])

    @contextmanager
    def batched_events(self) -> Iterator[None]:
        """Inside the caller's transaction: the events emitted in the block are stored with one
        multi-row INSERT at its end (a run's `execution` and `done` events), in order."""
        self._event_batch = []
        try:
            yield
            batch = self._event_batch
        finally:
            self._event_batch = None
        if batch:
            self._store(batch)

    def _store(self, rows: list[ExecutionEvent]) -> None:
        stored = ExecutionEvent.objects.bulk_create(rows)
        for event in stored:
            transaction.on_commit(
                lambda e=event: events.stream_event(
                    execution_id=e.execution_id, event_type=e.type, data=e.data, event_id=e.pk
                )
            )

    def delta(self, kind: str, text: str) -> None:
        """A streamed chunk of content or thinking; coalesced so a token is not a row."""
        if not text:
            return
        with self._lock:
            if self._buffer_kind not in (None, kind):
                self._flush()
            if not self._buffer:
                self._buffer_since = time.monotonic()
            self._buffer_kind = kind
            self._buffer.append(text)
            if time.monotonic() - self._buffer_since >= DELTA_FLUSH_SECONDS:
                self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self._buffer and self._buffer_kind:
            self.emit(self._buffer_kind, {"content": "".join(self._buffer)})
            release_db_connection()  # streaming a slow reply must not pin a connection
        self._buffer = []
        self._buffer_kind = None
