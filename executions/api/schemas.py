"""Request and response shapes of the native API, as django-ninja schemas.

Inputs are validated from these while the request is parsed (a 422 naming the field). Outputs
document what `executions/serializers.py` produces: the handlers return the serializers' dicts
directly (encoded once with orjson, no second validation pass on the hot path), and these
classes give the OpenAPI document, and schemathesis, the shape to check every reply against.
"""

from __future__ import annotations

from typing import Any, Literal

from ninja import Field, Schema
from pydantic import StrictBool

from approvals.schemas import ApprovalOut, ApprovalReply, ApprovalRequestIn
from executions.validation import BodyIn, SafeJson, SafeList, SafeObject, SafeStr, SafeText

__all__ = ["ApprovalReply", "ApprovalRequestIn"]  # re-exported for the executions router

# --- errors ----------------------------------------------------------------------------------


class FieldError(Schema):
    field: str
    message: str


class ErrorOut(Schema):
    """Every error of the native API: a message, a stable code and optional details."""

    error: str
    code: str
    details: Any = None


# --- inputs ----------------------------------------------------------------------------------


class AgentIn(BodyIn):
    name: SafeStr(200, min_length=1)
    type: Literal["agent", "workflow", "python", "external"] = "agent"
    description: SafeText = ""
    metadata: SafeObject | None = None
    template_id: SafeStr(200) | None = None


class AgentPatchIn(BodyIn):
    name: SafeStr(200) | None = None
    type: SafeStr(16) | None = Field(None, description="accepted only if unchanged")
    description: SafeText | None = None
    metadata: SafeObject | None = None


class VersionIn(BodyIn):
    version: SafeStr(64) | None = None
    config: SafeObject = Field(default_factory=dict)
    input_schema: SafeObject | None = None
    output_schema: SafeObject | None = None
    set_current: StrictBool = False
    message: SafeText | None = None
    model_config_: SafeObject | None = Field(None, alias="model_config")
    run_budget: SafeObject | None = None
    approval_policy: SafeObject | None = None
    tools: SafeList | None = None
    sub_agents: SafeList | None = None
    guardrails: SafeList | None = None


class ExecuteIn(BodyIn):
    input: SafeJson = None
    metadata: SafeObject | None = None
    session_id: SafeStr(200) | None = None
    version_id: SafeStr(64) | None = None
    sync: StrictBool | None = None


class ExecutionIn(ExecuteIn):
    agent_id: SafeStr(200) = Field(..., description="id (or name) of the agent to run")


class ResumeIn(BodyIn):
    input: SafeJson = None


class CancelIn(BodyIn):
    reason: SafeText | None = None


class DecisionShortcutIn(BodyIn):
    reason: SafeText | None = None
    payload: SafeJson = None
    response: SafeJson = None
    option: SafeJson = None
    options: SafeList | None = None


class ExternalEventsIn(BodyIn):
    """One event, or several under `events`: steps, logs, usage, output or error."""

    model_config = {"extra": "allow"}
    events: list[SafeObject] | None = None


# --- outputs ---------------------------------------------------------------------------------


class Meta(Schema):
    total: int | None = Field(None, description="null in cursor mode")
    total_exact: bool | None = Field(
        None,
        description="present and false when the count stopped at 10,000 rows: total is then a "
        "lower bound (ask count=exact for the exact figure)",
    )
    page: int
    limit: int
    pages: int | None = None
    next_cursor: str | None = None


class VersionOut(Schema):
    id: str
    agent_id: str
    version: str
    number: int
    config: dict[str, Any]
    input_schema: dict[str, Any]
    output_schema: Any
    is_current: bool
    message: str
    model_config_: Any = Field(None, alias="model_config")
    run_budget: Any
    approval_policy: Any
    tools: list[dict[str, Any]]
    simulated: bool
    created_at: str


class AgentOut(Schema):
    id: str
    workspace_id: str
    name: str
    description: str
    type: str
    status: Literal["active", "draft"]
    labels: list[str]
    metadata: Any
    current_version: VersionOut | None
    current_version_id: str | None
    created_at: str
    updated_at: str


class ExecutionOut(Schema):
    id: str
    execution_id: str
    agent_id: str
    agent_name: str
    agent_version_id: str
    version: str | None
    workspace_id: str
    user_id: str
    api_key_id: str | None
    session_id: str
    parent_execution_id: str | None
    retry_of: str | None
    status: str
    input: Any
    output: Any
    error: str
    metadata: Any
    token_usage: dict[str, Any]
    cost: float | None
    cost_known: bool
    duration_ms: int | None
    trace_id: str
    transition_count: int
    simulated: bool
    cancel_requested: bool
    started_at: str | None
    completed_at: str | None
    created_at: str
    updated_at: str


class ExecutionTreeOut(ExecutionOut):
    children: list[ExecutionTreeOut]


class ActorOut(Schema):
    type: str
    label: str


class TransitionOut(Schema):
    id: int
    execution_id: str
    seq: int
    type: str
    from_status: str
    to_status: str
    step_path: str
    step_kind: str
    input: Any
    output: Any
    usage: Any
    cost: float | None
    message: str
    actor: ActorOut
    started_at: str | None
    ended_at: str | None
    created_at: str


class StatsOut(Schema):
    model_config = {"extra": "allow"}
    total: int
    by_status: dict[str, int]
    cost: float


class WorkspaceRef(Schema):
    id: str
    slug: str
    name: str


class KeyRef(Schema):
    prefix: str
    name: str


class MeOut(Schema):
    workspace: WorkspaceRef
    role: str
    api_key: KeyRef


# --- envelopes -------------------------------------------------------------------------------


class AgentReply(Schema):
    data: AgentOut


class AgentPage(Schema):
    data: list[AgentOut]
    meta: Meta


class VersionReply(Schema):
    data: VersionOut


class VersionList(Schema):
    data: list[VersionOut]


class ExecutionReply(Schema):
    data: ExecutionOut


class ExecutionPage(Schema):
    data: list[ExecutionOut]
    meta: Meta


class ExecutionTreeReply(Schema):
    data: ExecutionTreeOut


class TransitionPage(Schema):
    data: list[TransitionOut]
    meta: Meta


class StatsReply(Schema):
    data: StatsOut


class MeReply(Schema):
    data: MeOut


class InboxItem(ExecutionOut):
    approval_expires_at: str | None
    pending_approvals: list[ApprovalOut]


class InboxPage(Schema):
    data: list[InboxItem]
    meta: Meta
