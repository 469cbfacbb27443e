"""Request and response shapes of `/api/v1/approvals` and `/api/v1/webhooks` (django-ninja
schemas). The handlers return `approvals/serializers.py` dicts; these document them."""

from __future__ import annotations

from typing import Any

from ninja import Field, Schema
from pydantic import StrictBool

from executions.validation import BodyIn, SafeJson, SafeList, SafeObject, SafeStr, SafeText

# --- inputs ----------------------------------------------------------------------------------


class DecideIn(BodyIn):
    decision: SafeStr(16) = Field(..., description="approve | reject | edit | respond")
    reason: SafeText | None = None
    payload: SafeJson = Field(None, description="the edited payload (edit)")
    response: SafeJson = Field(None, description="free text or a form answer (respond)")
    option: SafeJson = Field(None, description="the chosen option's value")
    options: SafeList | None = Field(None, description="several options (multiple choice)")


class BulkDecideIn(BodyIn):
    decision: SafeStr(16)
    reason: SafeText | None = None
    ids: list[SafeStr(64)] | None = None
    filter: SafeObject | None = Field(
        None, description="instead of ids: the same filters as GET /approvals (pending only)"
    )


class CommentIn(BodyIn):
    body: SafeText


class ApprovalRequestIn(BodyIn):
    """What an external agent asks a human (the approval spec) and the payload to review."""

    model_config = {"extra": "allow"}
    title: SafeStr(300) | None = None
    description: SafeText | None = None
    step_path: SafeStr(200) | None = None
    payload: SafeJson = None


class WebhookIn(BodyIn):
    url: SafeStr(1000)
    events: list[SafeStr(64)] = Field(default_factory=lambda: ["*"])
    description: SafeStr(200) = ""
    secret: SafeStr(100) | None = Field(None, description="leave out to have one generated")


class WebhookPatchIn(BodyIn):
    url: SafeStr(1000) | None = None
    events: list[SafeStr(64)] | None = None
    active: StrictBool | None = None
    description: SafeStr(200) | None = None


# --- outputs ---------------------------------------------------------------------------------


class Who(Schema):
    type: str
    label: str
    user: str | None


class DecisionOut(Schema):
    id: int
    decision: str
    reason: str
    payload: Any
    response: Any
    options: Any
    actor: Who
    created_at: str


class Assignees(Schema):
    users: list[str]
    roles: Any


class Progress(Schema):
    approvals: int
    required: int
    rejections: int
    required_rejections: int | None
    text: str


class ApprovalOut(Schema):
    id: str
    workspace_id: str
    execution_id: str | None
    agent_id: str | None
    agent_name: str | None
    step_path: str
    source: str
    title: str
    description: str
    description_html: str
    payload: Any
    payload_schema: Any
    allowed_actions: Any
    options: Any
    multiple: bool
    response_schema: Any
    assignees: Assignees
    forbid_self_approval: bool
    required_approvals: int
    required_rejections: int | None
    reject_ends: bool
    progress: Progress
    status: str
    result_payload: Any
    response: Any
    chosen_options: Any
    expires_at: str | None
    due_at: str | None
    overdue: bool
    on_timeout: str
    escalate_at: str | None
    escalated_at: str | None
    decided_at: str | None
    decided_by: str | None
    created_at: str
    updated_at: str
    can_decide: bool | None = None
    decisions: list[DecisionOut] | None = None


class CommentOut(Schema):
    id: int
    approval_id: str
    body: str
    body_html: str
    author: Who
    created_at: str


class WebhookOut(Schema):
    id: str
    url: str
    events: list[str]
    active: bool
    description: str
    secret_hint: str
    created_at: str
    secret: str | None = Field(None, description="only in the reply that created it")


class AttemptOut(Schema):
    status_code: int | None
    error: str
    duration_ms: int | None
    created_at: str


class DeliveryOut(Schema):
    id: str
    webhook_id: str
    event: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str
    next_attempt_at: str | None
    delivered_at: str | None
    created_at: str
    payload: Any
    log: list[AttemptOut]


class PageMeta(Schema):
    total: int | None
    page: int
    limit: int
    pages: int | None = None
    next_cursor: str | None = None


class ApprovalReply(Schema):
    data: ApprovalOut


class ApprovalPage(Schema):
    data: list[ApprovalOut]
    meta: PageMeta


class WaitMeta(Schema):
    decided: bool


class ApprovalWaitReply(Schema):
    data: ApprovalOut
    meta: WaitMeta


class BulkItem(Schema):
    model_config = {"extra": "allow"}
    id: str
    result: str


class BulkMeta(Schema):
    total: int
    counts: dict[str, int]


class BulkReply(Schema):
    data: list[BulkItem]
    meta: BulkMeta


class CommentReply(Schema):
    data: CommentOut


class CommentPage(Schema):
    data: list[CommentOut]
    meta: PageMeta


class WebhookReply(Schema):
    data: WebhookOut


class WebhookListMeta(Schema):
    events: list[str]


class WebhookList(Schema):
    data: list[WebhookOut]
    meta: WebhookListMeta


class DeliveryReply(Schema):
    data: DeliveryOut


class DeliveryPage(Schema):
    data: list[DeliveryOut]
    meta: PageMeta
