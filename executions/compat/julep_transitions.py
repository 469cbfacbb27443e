"""The Julep 2.21 face's transitions: list, get, and the two server-sent streams (status and
transitions). A router of the /julep API (julep.py mounts it); shapes only, like the rest."""

from __future__ import annotations

import base64
from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from ninja import Router

from executions import selectors
from executions.compat import common
from executions.compat import julep_schemas as s
from executions.compat.common import reply
from executions.compat.fields import Text
from executions.compat.julep_schemas import Direction, Id, Limit, Offset, SortBy
from executions.compat.julep_shapes import julep_status, transition_out
from executions.errors import NotFound, ValidationFailed, field_error
from executions.lifecycle import PARKED, TERMINAL
from executions.live import streams
from executions.models import Execution, Transition
from executions.serializers import iso

router = Router()


def _execution(request: HttpRequest, execution_id: str) -> Execution:
    return selectors.execution_get(workspace=request.workspace, execution_id=execution_id)


# --- transitions -----------------------------------------------------------------------------


@router.get(
    "/executions/{execution_id}/transitions",
    summary="List an execution's transitions (transitions are immutable: both sort keys order "
    "them by sequence)",
    tags=["transitions"],
    response=s.replies({200: s.TransitionList}, 404),
)
def transition_list(
    request: HttpRequest,
    execution_id: Id,
    limit: int = Limit,
    offset: int = Offset,
    sort_by: SortBy = "created_at",
    direction: Direction = "desc",
    scope_id: Id | None = None,
):
    execution = _execution(request, execution_id)
    if scope_id and scope_id != str(execution.pk):
        return reply({"items": []})
    steps = selectors.transition_list(execution=execution)
    steps = steps.order_by("-seq" if direction == "desc" else "seq")
    return reply({"items": [transition_out(t) for t in steps[offset : offset + limit]]})


@router.get(
    "/executions/{execution_id}/transitions/{transition_id}",
    summary="Get one transition",
    tags=["transitions"],
    response=s.replies({200: s.TransitionOut}, 404),
)
def transition_get(request: HttpRequest, execution_id: Id, transition_id: Id):
    execution = _execution(request, execution_id)
    step = None
    if transition_id.isdigit() and len(transition_id) < 19:  # a bigint, not a random number
        step = selectors.transition_list(execution=execution).filter(pk=int(transition_id)).first()
    if step is None:
        raise NotFound(f"Transition {transition_id} not found")
    return reply(transition_out(step))


# --- streams ---------------------------------------------------------------------------------


def status_event_row(row: dict[str, Any]) -> dict[str, Any]:
    """The engine's ExecutionStatusEvent with the status in Julep's words."""
    event = streams.status_event(row)
    event["status"] = julep_status(
        Execution(status=row["status"], transition_count=row["transition_count"])
    )
    return event


SSE = {200: {"content": {"text/event-stream": {}}}}


@router.get(
    "/executions/{execution_id}/status.stream",
    summary="Server-sent status events until the execution finishes",
    tags=["executions"],
    response=s.replies({200: str}, 404),
    openapi_extra={"responses": SSE},
)
async def status_stream(request: HttpRequest, execution_id: Id):
    """seed 000's ExecutionStatusEvent frames, one per change; closed after the terminal one."""
    execution = await sync_to_async(_execution)(request, execution_id)
    return streams.sse_response(
        streams.status_events(execution.pk, shape=status_event_row, event=None)
    )


def _token(seq: int) -> str:
    return base64.urlsafe_b64encode(f"seq:{seq}".encode()).decode().rstrip("=")


def _after(token: str | None) -> int:
    if not token:
        return 0
    try:
        padded = token + "=" * (-len(token) % 4)
        kind, _, value = base64.urlsafe_b64decode(padded.encode()).decode().partition(":")
        if kind == "seq" and value.isdigit() and len(value) < 10:
            return int(value)
    except (ValueError, UnicodeDecodeError):
        pass
    raise ValidationFailed(
        "next_page_token is not valid",
        details=[field_error("next_page_token", "is not a token this server gave out")],
    )


def _transitions_after(execution_id: Any, seq: int) -> tuple[Execution | None, list[Transition]]:
    execution = Execution.objects.filter(pk=execution_id).first()
    steps = list(
        Transition.objects.filter(execution_id=execution_id, seq__gt=seq).order_by("seq")[:500]
    )
    return execution, steps


@router.get(
    "/executions/{execution_id}/transitions.stream",
    summary="Server-sent transitions; resumable with next_page_token",
    tags=["transitions"],
    response=s.replies({200: str}, 404),
    openapi_extra={"responses": SSE},
)
async def transition_stream(
    request: HttpRequest, execution_id: Id, next_page_token: Text(64) | None = None
):
    """One event per transition, `{"transition": {...}, "next_page_token": …}`. The stream
    ends once the execution has finished or is waiting on a person (input or approval) and
    every transition so far was sent; pass the last token back to continue after a resume."""
    execution = await sync_to_async(_execution)(request, execution_id)
    pk = execution.pk
    cursor = {"seq": _after(next_page_token)}

    async def read() -> tuple[Execution | None, list[Transition]]:
        return await sync_to_async(_transitions_after)(pk, cursor["seq"])

    async def render(snapshot) -> tuple[list[str], bool]:
        current, steps = snapshot
        frames = []
        for step in steps:
            cursor["seq"] = step.seq
            event = {**transition_out(step), "created_at": iso(step.created_at)}
            frames.append(
                common.sse_frame({"transition": event, "next_page_token": _token(step.seq)})
            )
        if current is None:
            return frames, True
        settled = current.status in TERMINAL or current.status in PARKED
        return frames, settled and cursor["seq"] >= current.transition_count

    return common.sse_response(common.poll(read, render=render))
