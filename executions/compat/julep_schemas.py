"""Request and response schemas of the Julep 2.21 face, so its OpenAPI document (/julep/docs)
describes what each operation takes and answers. Text fields use the shared checks of
executions.validation: no NUL, no lone surrogates, a column's length."""

from __future__ import annotations

from typing import Any, Literal

from ninja import Field, Query, Schema
from pydantic import ConfigDict, StrictBool, StrictInt

from executions.compat.fields import PLACEHOLDER, STORABLE, Json, JsonObject, Text
from executions.validation import BodyIn

Id = Text(64)
Name = Text(200, named=True)
Short = Text(200)
Steps = list[JsonObject]

# Query parameters shared by the list operations.
Limit = Query(100, ge=1, le=1000, description="page size")
Offset = Query(0, ge=0, le=10**9)
SortBy = Literal["created_at", "updated_at"]
Direction = Literal["asc", "desc"]

# `metadata_filter` is a JSON object in one query parameter (read by common.metadata_filter,
# which also takes the 2.x SDK's `metadata_filter.<key>=<value>` form).
METADATA_FILTER = {
    "name": "metadata_filter",
    "in": "query",
    "required": False,
    "description": "only agents whose metadata has these top-level entries",
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "propertyNames": {"maxLength": 200},
                "patternProperties": {STORABLE: PLACEHOLDER},
                "additionalProperties": False,
            }
        }
    },
}

# What each error status means on this face; every one has the FastAPI body `ErrorOut`.
ERROR_CODES = (400, 401, 403, 404, 409, 413, 422, 429)


class ErrorOut(Schema):
    """FastAPI's error body: a message, or for 422 a list of {loc, msg, type}."""

    detail: str | list[dict[str, Any]]


def replies(ok: dict[int, Any], *codes: int) -> dict[int, Any]:
    """`response=` for an operation: its success shape plus the error body for each code."""
    errors = codes or ERROR_CODES
    return {**ok, **{code: ErrorOut for code in sorted({400, 401, 422, 429, *errors})}}


# --- inputs ----------------------------------------------------------------------------------


class AgentIn(BodyIn):
    name: Name
    about: Text() = ""
    model: Short | None = None
    instructions: Text() | list[Text()] | None = None
    metadata: JsonObject | None = None
    default_settings: JsonObject | None = None
    default_system_template: Text() | None = None
    canonical_name: Short | None = None
    project: Short | None = None


class TaskIn(BodyIn):
    """A Julep task; extra top-level keys are named sub-workflows (called by `yield` steps)."""

    name: Name
    main: Steps = Field(..., min_length=1)
    description: Text() | None = ""
    canonical_name: Short | None = None
    inherit_tools: StrictBool | None = None
    input_schema: JsonObject | None = None
    metadata: JsonObject | None = None
    tools: list[JsonObject] | None = None


class ExecutionIn(BodyIn):
    input: Json = None
    metadata: JsonObject | None = None
    # Julep lets a client pass these; they are the engine's to set, so they are ignored.
    output: Json = None
    error: Text() | None = None
    transition_count: StrictInt | None = None


class ChangeStatusIn(BodyIn):
    status: Text(24) = Field(..., description="cancelled, or running (with input) to resume")
    input: Json = None
    reason: Text() | None = None


# --- outputs ---------------------------------------------------------------------------------


class AgentOut(Schema):
    id: str
    name: str
    about: str
    model: str | None
    instructions: str | list[str] | None
    default_settings: dict[str, Any] | None
    default_system_template: str | None
    canonical_name: str | None
    project: str | None
    metadata: dict[str, Any]
    created_at: str
    updated_at: str


class TaskOut(Schema):
    """A task; named sub-workflows appear as extra top-level lists of steps."""

    model_config = ConfigDict(extra="allow")

    id: str
    agent_id: str | None
    name: str
    description: str
    canonical_name: str | None
    main: list[Any]
    input_schema: dict[str, Any] | None
    tools: list[Any]
    inherit_tools: bool
    metadata: dict[str, Any]
    version: str | None
    created_at: str
    updated_at: str


class ExecutionOut(Schema):
    id: str
    task_id: str
    status: str = Field(
        ...,
        description="queued | starting | running | awaiting_input | succeeded | failed | cancelled",
    )
    input: Any
    output: Any
    error: str | None
    metadata: dict[str, Any]
    transition_count: int
    session_id: str | None
    created_at: str
    updated_at: str


class TransitionOut(Schema):
    id: str
    execution_id: str
    type: str
    output: Any
    current: dict[str, Any]
    next: dict[str, Any] | None
    step_label: str | None
    metadata: dict[str, Any]
    created_at: str
    updated_at: str


class AgentList(Schema):
    items: list[AgentOut]


class TaskList(Schema):
    items: list[TaskOut]


class ExecutionList(Schema):
    items: list[ExecutionOut]


class TransitionList(Schema):
    items: list[TransitionOut]


# --- the 0.x SDK (seed 004, /julep/v0) -----------------------------------------------------


class FunctionIn(Schema):
    name: Text(64)
    description: Text() | None = None
    parameters: JsonObject | None = None


class ToolIn(Schema):
    type: Literal["function"] = "function"
    function: FunctionIn


class AgentV0In(BodyIn):
    name: Name
    about: Text() | None = ""
    instructions: Text() | list[Text()] | None = None
    tools: list[ToolIn] | None = None
    default_settings: JsonObject | None = None
    model: Text(200) | None = None
    docs: list[Json] | None = Field(None, max_length=0, description="not supported: empty")
    metadata: JsonObject | None = None


class TaskV0In(BodyIn):
    name: Name
    description: Text() | None = None
    tools_available: list[Text(64)] | None = Field(None, description="names of tools")
    input_schema: JsonObject | None = None
    main: list[JsonObject] = Field(..., min_length=1)


class ExecutionV0In(BodyIn):
    task_id: Id
    arguments: JsonObject
    status: Literal["queued"] = "queued"


class CreatedV0(Schema):
    """ResourceCreatedResponse: the SDK merges it with what it sent."""

    id: str
    created_at: str
    jobs: list[str]


class AgentV0Out(Schema):
    id: str
    name: str
    about: str | None
    model: str
    instructions: str | list[str] | None
    default_settings: dict[str, Any] | None
    metadata: dict[str, Any]
    created_at: str
    updated_at: str


class AgentV0List(Schema):
    items: list[AgentV0Out]


class TaskV0Out(Schema):
    id: str
    agent_id: str
    name: str
    description: str | None
    tools_available: list[str] | None
    input_schema: dict[str, Any] | None
    main: list[dict[str, Any]]
    created_at: str
    updated_at: str


class ExecutionV0Out(Schema):
    id: str
    task_id: str
    status: str = Field(
        ...,
        description="queued | starting | running | awaiting_input | succeeded | failed | cancelled",
    )
    arguments: dict[str, Any]
    user_id: str | None
    session_id: str | None
    output: Any = Field(None, description="Steward's addition: the result, once succeeded")
    error: str | None = Field(None, description="Steward's addition: why it failed")
    created_at: str
    updated_at: str
