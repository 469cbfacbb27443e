"""Server-sent event streams for programs (PromptRails `stream`, Julep `status.stream`).

Both follow the execution through `follow.follow`: stored ExecutionEvent rows (a replay for a
late subscriber, then new rows as the worker writes them) and the execution row.

Frames use LF line endings and one `data:` line of JSON (the PromptRails parser needs both).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async
from django.http import StreamingHttpResponse

from executions.lifecycle import TERMINAL, Status
from executions.live.follow import KEEPALIVE_SECONDS, follow
from executions.models import Execution, ExecutionEvent

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


# On threads of their own (a stream must not queue behind sync views), each closing its database
# connection afterwards: a plain sync_to_async thread would keep a pooled connection checked out
# for as long as the thread lives (it kept the test database "in use" at teardown).
_events_after_async = database_sync_to_async(_events_after, thread_sensitive=False)
_row_async = database_sync_to_async(_row, thread_sensitive=False)


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
    cursor = {"last_id": 0}

    def frames_of(rows: list[tuple[int, str, dict]]) -> tuple[list[bytes], bool]:
        frames = []
        for event_id, event_type, data in rows:
            cursor["last_id"] = event_id
            if event_type == "execution":
                continue
            frames.append(frame(event_type, data))
            if event_type in {"done", "error"}:
                return frames, True
        return frames, False

    async def step() -> tuple[list[bytes], bool]:
        rows = await _events_after_async(execution_id, cursor["last_id"])
        if rows:
            return frames_of(rows)
        row = await _row_async(execution_id)
        if row is None:
            return [frame("error", {"message": "execution not found (it may have expired)"})], True
        if row["status"] not in TERMINAL:
            return [], False
        # The worker writes done/error in the same transaction as the end: read once more.
        frames, done = frames_of(await _events_after_async(execution_id, cursor["last_id"]))
        return (frames if done else [*frames, _closing_frame(row)]), True

    async for item in follow(step, keepalive=b": keep-alive\n\n"):
        yield item


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
    last: dict[str, tuple | None] = {"key": None}

    async def step() -> tuple[list[bytes], bool]:
        row = await _row_async(execution_id)
        if row is None:
            return [], True
        key = (row["status"], row["transition_count"], row["updated_at"])
        frames = []
        if key != last["key"]:
            last["key"] = key
            frames.append(frame(event, shape(row)))
        return frames, row["status"] in TERMINAL

    stream = follow(
        step,
        max_seconds=STATUS_STREAM_CAP_SECONDS,
        keepalive=b": ping\n\n",
        keepalive_seconds=KEEPALIVE_SECONDS,
    )
    async for item in stream:
        yield item
