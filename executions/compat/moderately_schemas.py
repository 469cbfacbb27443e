"""Request and response schemas of the Moderately face, so its OpenAPI document
(/moderately/docs) describes what each operation takes and answers."""

from __future__ import annotations

from typing import Any

from ninja import Field, Schema
from pydantic import ConfigDict

from executions.compat.fields import JsonObject, Text
from executions.validation import BodyIn


class ErrorOut(Schema):
    """Moderately's APIError body; `details` only on validation errors (400), since its
    presence makes the SDK raise ValidationError."""

    code: str
    message: str
    path: str
    timestamp: str
    request_id: str
    details: list[dict[str, Any]] | None = None


def replies(ok: dict[int, Any], *codes: int) -> dict[int, Any]:
    """`response=` for an operation: its success shape plus the error body for each code
    (validation problems are 400s on this face, never 422)."""
    return {**ok, **{code: ErrorOut for code in sorted({400, 401, 404, 429, *codes})}}


class ExecutionIn(BodyIn):
    model_config = ConfigDict(extra="forbid")

    agent_id: Text(200) = Field(..., description="the id or name of an agent")
    input_data: JsonObject | None = None
    metadata: JsonObject | None = None
    session_id: Text(200) | None = None
    version_id: Text(64) | None = None


class CancelIn(BodyIn):
    model_config = ConfigDict(extra="forbid")

    reason: Text(2000) | None = None


class ExecutionOut(Schema):
    agentExecutionId: str  # noqa: N815 - the platform's field names
    id: str
    agentId: str  # noqa: N815
    agent_id: str
    agentName: str  # noqa: N815
    teamId: str  # noqa: N815
    agentConfigurationVersionId: str | None  # noqa: N815
    agentInput: Any  # noqa: N815
    input_data: Any
    agentInputSchema: dict[str, Any] | None  # noqa: N815
    agentOutput: Any  # noqa: N815
    agentOutputSchema: dict[str, Any] | None  # noqa: N815
    status: str = Field(
        ..., description="pending | running | paused | completed | failed | cancelled"
    )
    nativeStatus: str  # noqa: N815
    error: str | None
    metadata: dict[str, Any]
    sessionId: str | None  # noqa: N815
    tokenUsage: dict[str, int]  # noqa: N815
    cost: float | None
    durationMs: int | None  # noqa: N815
    transitionCount: int  # noqa: N815
    createdAt: str  # noqa: N815
    updatedAt: str  # noqa: N815
    startedAt: str | None  # noqa: N815
    completedAt: str | None  # noqa: N815
    failedAt: str | None  # noqa: N815
    cancelledAt: str | None  # noqa: N815
    pausedAt: str | None  # noqa: N815


class Pagination(Schema):
    page: int
    page_size: int
    total_items: int
    total_pages: int
    has_next_page: bool
    has_previous_page: bool


class ExecutionPage(Schema):
    items: list[ExecutionOut]
    pagination: Pagination
