"""Server-sent event streams for programs (PromptRails `stream`, Julep `status.stream`).

Both read the database rather than a channel group: stored ExecutionEvent rows (a replay for a
late subscriber, then new rows as the worker writes them) and the execution row. Polling by
primary key is one indexed read per interval, works across processes and machines in every
topology, and cannot miss an event that was published before the subscriber arrived.

Frames use LF line endings and one `data:` line of JSON (the PromptRails parser needs both).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.http import StreamingHttpResponse

from executions.lifecycle import TERMINAL, Status
from executions.models import Execution, ExecutionEvent

KEEPALIVE_SECONDS = 15.0
MIN_POLL, MAX_POLL = 0.02, 0.25
STATUS_STREAM_CAP_SECONDS = 600.0


def frame(event: str | None, data: Any) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, default=str, separators=(',', ':'))}\n\n".encode()


def sse_response(stream: AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # no proxy buffering (nginx)
    return response


def _events_after(execution_id: Any, after: int) -> list[tuple[int, str, dict]]:
    return list(
        ExecutionEvent.objects.filter(execution_id=execution_id, id__gt=after)
        .order_by("id")
        .values_list("id", "type", "data")[:500]
    )


def _row(execution_id: Any) -> dict[str, Any] | None:
    return (
        Execution.objects.filter(pk=execution_id)
        .values(
            "id",
            "status",
            "updated_at",
            "error",
            "transition_count",
            "metadata",
            "output",
            "token_usage",
            "input",
            "agent_id",
            "created_at",
        )
        .first()
    )


_events_after_async = sync_to_async(_events_after, thread_sensitive=False)
_row_async = sync_to_async(_row, thread_sensitive=False)


def _closing_frame(row: dict[str, Any]) -> bytes:
    """The last frame for an execution that ended without one of ours (cancelled, rejected…)."""
    status = row["status"]
    if status == Status.COMPLETED:
        output = row["output"]
        return frame(
            "done",
            {
                "output": output if isinstance(output, dict) else {"result": output},
                "token_usage": row["token_usage"] or {},
            },
        )
    message = row["error"] or f"execution {status}"
    return frame("error", {"message": message})


async def execution_events(execution_id: Any) -> AsyncIterator[bytes]:
    """`execution`, then every stored event in order, then live ones; closes after done/error."""
    yield frame("execution", {"execution_id": str(execution_id), "user_message_id": ""})
    last_id = 0
    delay = MIN_POLL
    last_sent = time.monotonic()
    while True:
        rows = await _events_after_async(execution_id, last_id)
        for event_id, event_type, data in rows:
            last_id = event_id
            if event_type == "execution":
                continue
            yield frame(event_type, data)
            last_sent = time.monotonic()
            if event_type in {"done", "error"}:
                return
        if rows:
            delay = MIN_POLL
            continue
        row = await _row_async(execution_id)
        if row is None:
            yield frame("error", {"message": "execution not found (it may have expired)"})
            return
        if row["status"] in TERMINAL:
            # The worker writes done/error in the same transaction as the end: read once more.
            rows = await _events_after_async(execution_id, last_id)
            for _, event_type, data in rows:
                if event_type == "execution":
                    continue
                yield frame(event_type, data)
                if event_type in {"done", "error"}:
                    return
            yield _closing_frame(row)
            return
        if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield b": keep-alive\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, MAX_POLL)


def status_event(row: dict[str, Any]) -> dict[str, Any]:
    """Julep's ExecutionStatusEvent, plus enough to fill the SDK's Execution model."""
    updated = row["updated_at"].isoformat().replace("+00:00", "Z")
    return {
        "execution_id": str(row["id"]),
        "id": str(row["id"]),
        "status": row["status"],
        "updated_at": updated,
        "error": row["error"] or None,
        "transition_count": row["transition_count"],
        "metadata": row["metadata"] or {},
        "task_id": str(row["agent_id"]),
        "created_at": row["created_at"].isoformat().replace("+00:00", "Z"),
        "input": row["input"],
        "output": row["output"],
    }


async def status_events(
    execution_id: Any, *, shape: Any = status_event, event: str | None = "status"
) -> AsyncIterator[bytes]:
    """One frame per change of the execution row; closes after a terminal status."""
    last: tuple | None = None
    delay = MIN_POLL
    started = last_sent = time.monotonic()
    while True:
        row = await _row_async(execution_id)
        if row is None:
            return
        key = (row["status"], row["transition_count"], row["updated_at"])
        if key != last:
            last = key
            yield frame(event, shape(row))
            last_sent = time.monotonic()
            delay = MIN_POLL
        if row["status"] in TERMINAL or time.monotonic() - started > STATUS_STREAM_CAP_SECONDS:
            return
        if time.monotonic() - last_sent > KEEPALIVE_SECONDS:
            yield b": ping\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(delay)
        delay = min(delay * 1.5, MAX_POLL)
