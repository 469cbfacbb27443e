"""Following an execution: long-poll `wait` and the server-sent event streams.

Async views: a follower holds no thread while it waits between reads.
"""

from __future__ import annotations

from typing import Annotated

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest
from ninja import Field, Router

from executions import selectors, serializers
from executions.api import schemas as s
from executions.api.common import data, replies
from executions.live import follow, streams
from executions.validation import SafeStr

router = Router(tags=["executions"])

Text = SafeStr(200)
Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]
SSE = {200: {"description": "text/event-stream"}}


@router.get(
    "/{execution_id}/wait",
    summary="Wait until finished or parked (or the timeout, in seconds)",
    response=replies({200: s.ExecutionReply}, 404),
)
async def execution_wait(request: HttpRequest, execution_id: Text, timeout: Seconds = 30.0):
    execution = await sync_to_async(selectors.execution_get)(
        workspace=request.workspace, execution_id=execution_id
    )
    timeout = min(timeout, settings.SYNC_EXECUTE_TIMEOUT_SECONDS * 4)
    execution = await follow.wait_settled(execution.pk, timeout=timeout)
    return data(await sync_to_async(serializers.execution_out)(execution))


@router.get(
    "/{execution_id}/stream",
    summary="Streamed events (SSE), replay then live",
    response=replies({200: None}, 404),
    openapi_extra={"responses": {200: {"content": {"text/event-stream": {}}}}},
)
async def execution_stream(request: HttpRequest, execution_id: Text):
    execution = await database_sync_to_async(selectors.execution_get, thread_sensitive=False)(
        workspace=request.workspace, execution_id=execution_id
    )
    return streams.sse_response(streams.execution_events(execution.pk))


@router.get(
    "/{execution_id}/status.stream",
    summary="Status changes (SSE, Julep ExecutionStatusEvent)",
    response=replies({200: None}, 404),
    openapi_extra={"responses": {200: {"content": {"text/event-stream": {}}}}},
)
async def execution_status_stream(request: HttpRequest, execution_id: Text):
    execution = await database_sync_to_async(selectors.execution_get, thread_sensitive=False)(
        workspace=request.workspace, execution_id=execution_id
    )
    return streams.sse_response(streams.status_events(execution.pk))
