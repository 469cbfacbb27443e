"""Streaming events of a run (`execution`, `thinking`, `tool_start`, `tool_end`, `content`,
`done`, `error`): stored as ExecutionEvent rows so a late subscriber gets a replay, and
published once the row is committed. Deltas of a streamed reply are coalesced, so a token is
not a row."""

from __future__ import annotations

import threading
import time
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

    def emit(self, type: str, data: dict[str, Any]) -> None:
        """Store a streamed event and publish it once the row is committed."""
        event = ExecutionEvent.objects.create(
            execution_id=self.execution.pk, type=type, data=jsonable(data)
        )
        execution_id, event_id = self.execution.pk, event.pk
        transaction.on_commit(
            lambda: events.stream_event(
                execution_id=execution_id, event_type=type, data=event.data, event_id=event_id
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
