"""The Moderately AI dialect at `/moderately` (the `moderatelyai-sdk` 0.2.7 `agent_executions`).

The SDK puts `?teamIds=<team_id>` on every request; a team is a Steward workspace. The key
already names its workspace, so `teamIds` must name that same workspace (by id or slug): any
other team answers 404 (or an empty list), never another tenant's data. Statuses follow
DESIGN.md §5; errors use Moderately's `{"code", "message", ...}` body so the SDK raises its own
exceptions (400 with `details` → ValidationError, 401 → AuthenticationError, others APIError).
"""

from __future__ import annotations

import math
import uuid
from typing import Annotated, Any, Literal

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path, re_path
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from ninja import Query
from pydantic import WithJsonSchema

from executions import selectors, services
from executions.compat import common
from executions.compat import moderately_schemas as m
from executions.compat.common import reply, require
from executions.compat.fields import FaceAPI, Text
from executions.errors import NotFound, ValidationFailed, field_error
from executions.lifecycle import Status
from executions.models import Execution, Role
from executions.selectors import ORDERABLE
from executions.serializers import iso
from executions.validation import clean_text

STATUS = {
    Status.PENDING: "pending",
    Status.RUNNING: "running",
    Status.AWAITING_APPROVAL: "paused",
    Status.AWAITING_INPUT: "paused",
    Status.COMPLETED: "completed",
    Status.FAILED: "failed",
    Status.REJECTED: "failed",
    Status.CANCELLED: "cancelled",
}
NATIVE = {
    "pending": [Status.PENDING],
    "running": [Status.RUNNING],
    "paused": [Status.AWAITING_APPROVAL, Status.AWAITING_INPUT],
    "completed": [Status.COMPLETED],
    "failed": [Status.FAILED, Status.REJECTED],
    "cancelled": [Status.CANCELLED],
}
ORDER_FIELDS = {
    "createdAt": "created_at",
    "updatedAt": "updated_at",
    "startedAt": "started_at",
    "completedAt": "completed_at",
    "durationMs": "duration_ms",
}
CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    429: "RATE_LIMITED",
}


def render_error(request: HttpRequest, problem: common.Problem) -> HttpResponse:
    """Moderately's APIError body. Validation problems are 400 with `details` (the SDK's
    ValidationError); `details` is left out of every other error on purpose, since its mere
    presence makes the SDK raise ValidationError."""
    status = 400 if problem.status == 422 else problem.status
    body: dict[str, Any] = {
        "code": "VALIDATION_ERROR" if problem.status == 422 else CODES.get(status, "ERROR"),
        "message": problem.message,
        "path": request.path,
        "timestamp": timezone.now().isoformat().replace("+00:00", "Z"),
        "request_id": str(uuid.uuid4()),
    }
    if problem.status == 422:
        body["details"] = problem.fields or [{"field": "body", "message": problem.message}]
    return JsonResponse(body, status=status)


api = FaceAPI(
    title="Steward — Moderately AI dialect",
    version="moderately-0.2",
    description="Moderately AI agent executions over Steward. Authenticate with "
    "`Authorization: Bearer <key>`; `teamIds` is your workspace id or slug.",
    auth=common.AUTH,
    urls_namespace="moderately",
    docs_url="/docs",
)
common.install_error_handlers(api, render_error)


@csrf_exempt  # an API path: a POST to an unknown one is a JSON 404, not the CSRF page
def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    return render_error(
        request, common.Problem(404, f"no Moderately endpoint at {request.path}", "not_found")
    )


# --- shapes ----------------------------------------------------------------------------------


def execution_out(execution: Execution) -> dict[str, Any]:
    version = execution.agent_version
    status = STATUS.get(execution.status, execution.status)
    ended = execution.completed_at
    usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    usage.update(execution.token_usage or {})
    return {
        "agentExecutionId": str(execution.pk),
        "id": str(execution.pk),
        "agentId": str(execution.agent_id),
        "agent_id": str(execution.agent_id),
        "agentName": execution.agent.name,
        "teamId": str(execution.workspace_id),
        "agentConfigurationVersionId": str(version.pk) if version else None,
        "agentInput": execution.input,
        "input_data": execution.input,
        "agentInputSchema": version.input_schema if version else None,
        "agentOutput": execution.output,
        "agentOutputSchema": version.output_schema if version else None,
        "status": status,
        "nativeStatus": execution.status,
        "error": execution.error or None,
        "metadata": execution.metadata or {},
        "sessionId": execution.session_id or None,
        "tokenUsage": usage,
        "cost": float(execution.cost) if execution.cost is not None else None,
        "durationMs": execution.duration_ms,
        "transitionCount": execution.transition_count,
        "createdAt": iso(execution.created_at),
        "updatedAt": iso(execution.updated_at),
        "startedAt": iso(execution.started_at),
        "completedAt": iso(ended) if status == "completed" else None,
        "failedAt": iso(ended) if status == "failed" else None,
        "cancelledAt": iso(ended) if status == "cancelled" else None,
        "pausedAt": iso(execution.updated_at) if status == "paused" else None,
    }


# --- teams -----------------------------------------------------------------------------------


def team_matches(request: HttpRequest) -> bool:
    """True when `teamIds` is absent or names the key's own workspace (by id or slug)."""
    teams = [t for raw in request.GET.getlist("teamIds") for t in raw.split(",") if t.strip()]
    if not teams:
        return True
    own = {str(request.workspace.pk), request.workspace.pk.hex, request.workspace.slug}
    return any(t.strip() in own for t in teams)


def require_team(request: HttpRequest) -> None:
    if not team_matches(request):
        teams = ", ".join(request.GET.getlist("teamIds"))
        raise NotFound(f"team {teams} not found")


def _execution(request: HttpRequest, execution_id: str) -> Execution:
    require_team(request)
    try:
        return selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    except NotFound as exc:
        raise NotFound(f"Agent execution {execution_id} not found: {exc.message}") from None


# --- endpoints -------------------------------------------------------------------------------

# One or more of the face's statuses, comma-separated (checked below, naming the field).
_NAME = "(" + "|".join(NATIVE) + ")"
StatusNames = Annotated[str, WithJsonSchema({"type": "string", "pattern": f"^{_NAME}(,{_NAME})*$"})]
TeamIds = Query(None, alias="teamIds", description="your workspace id or slug (the SDK sends it)")
ID = Text(64)


@api.get(
    "/agent-executions",
    summary="List agent executions",
    tags=["agent executions"],
    response=m.replies({200: m.ExecutionPage}),
)
def execution_list(
    request: HttpRequest,
    page: int = Query(1, ge=1, le=10**7),
    page_size: int = Query(10, ge=1, le=selectors.MAX_LIMIT),
    status: list[StatusNames] | None = Query(None, description=", ".join(NATIVE)),
    agent_id: Text(200) | None = Query(None, description="an agent's id or name"),
    order_by: Literal[
        "createdAt", "updatedAt", "startedAt", "completedAt", "durationMs", *ORDERABLE
    ] = "created_at",
    order_direction: Literal["asc", "desc"] = "desc",
    team_ids: list[Text(200)] | None = TeamIds,
):
    errors = []
    statuses: list[str] = []
    for raw in status or []:
        for name in (s.strip() for s in raw.split(",") if s.strip()):
            if name in NATIVE:
                statuses.extend(NATIVE[name])
            else:
                errors.append(
                    field_error("status", f"unknown status {name!r}; one of {', '.join(NATIVE)}")
                )
    if errors:
        raise ValidationFailed("invalid filter", details=errors)
    agent = None
    empty = not team_matches(request)
    if agent_id and not empty:
        try:
            agent = selectors.agent_get_by_id_or_name(workspace=request.workspace, ref=agent_id)
        except NotFound:
            empty = True
    filters = selectors.ExecutionFilters(
        status=statuses or None, agent_id=str(agent.pk) if agent else None
    )
    executions = selectors.execution_list(workspace=request.workspace, filters=filters)
    ordered = selectors.order_executions(
        executions, ORDER_FIELDS.get(order_by, order_by), order_direction
    )
    if empty:
        ordered = ordered.none()
    result = selectors.paginate(ordered, page=page, limit=page_size)
    total = result.total or 0
    pages = math.ceil(total / page_size) if total else 0
    return reply(
        {
            "items": [execution_out(e) for e in result.items],
            "pagination": {
                "page": page,
                "page_size": page_size,
                "total_items": total,
                "total_pages": pages,
                "has_next_page": page < pages,
                "has_previous_page": page > 1,
            },
        }
    )


@api.get(
    "/agent-executions/{execution_id}",
    summary="Get an agent execution",
    tags=["agent executions"],
    response=m.replies({200: m.ExecutionOut}),
)
def execution_retrieve(
    request: HttpRequest, execution_id: ID, team_ids: list[Text(200)] | None = TeamIds
):
    return reply(execution_out(_execution(request, execution_id)))


@api.post(
    "/agent-executions",
    summary="Start an agent execution (an Idempotency-Key header makes retries safe)",
    tags=["agent executions"],
    response=m.replies({200: m.ExecutionOut, 201: m.ExecutionOut}, 403, 409, 413),
)
def execution_create(
    request: HttpRequest, body: m.ExecutionIn, team_ids: list[Text(200)] | None = TeamIds
):
    require(request, Role.REVIEWER)
    require_team(request)
    key = request.headers.get("Idempotency-Key") or None
    clean_text(key, field="Idempotency-Key", max_length=200)
    try:
        agent = selectors.agent_get_by_id_or_name(workspace=request.workspace, ref=body.agent_id)
    except NotFound:
        raise NotFound(f"Agent {body.agent_id} not found") from None
    version = (
        selectors.agent_version_get(agent=agent, version_id=body.version_id)
        if body.version_id
        else None
    )
    execution, created = services.execution_start(
        workspace=request.workspace,
        agent=agent,
        input=body.input_data or {},
        metadata=body.metadata,
        session_id=body.session_id,
        version=version,
        idempotency_key=key,
        actor=request.actor,
    )
    return reply(execution_out(execution), status=201 if created else 200)


@api.api_operation(
    ["POST", "PATCH"],
    "/agent-executions/{execution_id}/cancel",
    summary="Cancel an agent execution (409 once it has finished)",
    tags=["agent executions"],
    response=m.replies({200: m.ExecutionOut}, 403, 409, 413),
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {"application/json": {"schema": m.CancelIn.model_json_schema()}},
        }
    },
)
def execution_cancel(
    request: HttpRequest, execution_id: ID, team_ids: list[Text(200)] | None = TeamIds
):
    require(request, Role.REVIEWER)
    execution = _execution(request, execution_id)
    reason = common.parse_body(request, m.CancelIn).reason or ""
    services.execution_cancel(execution=execution, actor=request.actor, reason=str(reason))
    return reply(execution_out(execution))


urlpatterns = [
    path("", common.face_urls(api, render_error)),
    re_path(r"^(?P<rest>.*)$", not_found),
]
