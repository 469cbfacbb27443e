"""The Julep dialect at `/julep` (the `julep` 2.21 SDK with `base_url=http://host/julep`).

Mapping (docs/compat.md, docs/decisions.md):
- A Julep **agent** is a Steward agent of type `agent`: `about` is its description, `metadata`
  its metadata, and model / instructions / default settings live in its current version.
- A Julep **task** is a Steward agent of type `workflow`; the task id is that agent's id. The
  task body (`main`, named sub-workflows, `tools`, `input_schema`) becomes an AgentVersion, and
  the owning Julep agent is remembered as `metadata.julep_agent_id`. Any workflow agent, even
  one made through the native API, can be fetched and run as a task by its id.
- A Julep **execution** is a Steward execution of that workflow agent; transitions are the
  Transition rows of the execution.

Everything here translates shapes and calls the same services, selectors and lifecycle as the
native API; statuses follow DESIGN.md §5.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from asgiref.sync import sync_to_async
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path, re_path
from ninja import NinjaAPI, Schema

from config.api import ApiKeyAuth
from executions import selectors, services
from executions.api import require
from executions.compat import common
from executions.errors import BadRequest, Conflict, NotFound, ValidationFailed, field_error
from executions.lifecycle import PARKED, TERMINAL, Status
from executions.models import Agent, AgentType, Execution, Role, Transition
from executions.serializers import iso

TASK_LINK = "julep_agent_id"  # agent.metadata key naming the Julep agent that owns a task
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100

STATUS = {
    Status.PENDING: "queued",
    Status.RUNNING: "running",
    Status.AWAITING_APPROVAL: "awaiting_input",
    Status.AWAITING_INPUT: "awaiting_input",
    Status.COMPLETED: "succeeded",
    Status.FAILED: "failed",
    Status.REJECTED: "failed",
    Status.CANCELLED: "cancelled",
}
TRANSITION_TYPES = {
    "init",
    "init_branch",
    "finish",
    "finish_branch",
    "wait",
    "resume",
    "error",
    "step",
    "cancelled",
}
# Keys of a task body that are task attributes, not workflows or step lists.
TASK_FIELDS = {"name", "description", "canonical_name", "inherit_tools", "metadata", "tools"}
# Keys of a version config that never show in a Julep task.
HIDDEN_CONFIG = {"model", "system_prompt", "type", "julep_agent", "limits", "run_budget"}
AGENT_VERSION_FIELDS = (
    "model",
    "instructions",
    "default_settings",
    "default_system_template",
    "canonical_name",
    "project",
)


# --- errors ----------------------------------------------------------------------------------


QUERY_FIELDS = {"limit", "offset", "sort_by", "direction", "metadata_filter", "scope_id"}


def _loc(field: str) -> list[Any]:
    parts: list[Any] = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", field)]
    if parts and parts[0] == "config":
        parts = parts[1:]
    if parts and parts[0] in QUERY_FIELDS:
        return ["query", *parts]
    return ["body", *parts]


def render_error(request: HttpRequest, problem: common.Problem) -> HttpResponse:
    """Julep's API is FastAPI: `{"detail": "..."}`, and 422 `{"detail": [{loc, msg, type}]}`."""
    if problem.status == 422 and problem.fields:
        detail: Any = [
            {
                "loc": _loc(f.get("field", "body")),
                "msg": f.get("message", ""),
                "type": "value_error",
            }
            for f in problem.fields
        ]
    else:
        detail = problem.message
    response = JsonResponse({"detail": detail}, status=problem.status)
    # The SDK retries 409s (and POSTs with them): a state conflict will not change by retrying.
    response["x-should-retry"] = "false"
    return response


api = NinjaAPI(
    title="Steward — Julep dialect",
    version="julep-2.21",
    description="The Julep executions API over Steward. Authenticate with "
    "`Authorization: Bearer <key>`.",
    auth=ApiKeyAuth(),
    urls_namespace="julep",
    docs_url="/docs",
)
common.install_error_handlers(api, render_error)


def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    return render_error(
        request, common.Problem(404, f"no Julep endpoint at {request.path}", "not_found")
    )


# --- shapes ----------------------------------------------------------------------------------


def julep_status(execution: Execution) -> str:
    # `starting`: moved to running but no step recorded yet (init is seq 1, the start seq 2).
    if execution.status == Status.RUNNING and execution.transition_count <= 2:
        return "starting"
    return STATUS.get(execution.status, execution.status)


def agent_out(agent: Agent) -> dict[str, Any]:
    config = (agent.current_version.config if agent.current_version else None) or {}
    return {
        "id": str(agent.pk),
        "name": agent.name,
        "about": agent.description,
        "model": config.get("model") if isinstance(config.get("model"), str) else None,
        "instructions": config.get("system_prompt", []),
        "default_settings": config.get("default_settings"),
        "default_system_template": config.get("default_system_template"),
        "canonical_name": config.get("canonical_name"),
        "project": config.get("project"),
        "metadata": agent.metadata or {},
        "created_at": iso(agent.created_at),
        "updated_at": iso(agent.updated_at),
    }


def task_out(agent: Agent) -> dict[str, Any]:
    version = agent.current_version
    config = (version.config if version else None) or {}
    metadata = {k: v for k, v in (agent.metadata or {}).items() if k != TASK_LINK}
    task: dict[str, Any] = {
        "id": str(agent.pk),
        "agent_id": (agent.metadata or {}).get(TASK_LINK),
        "name": config.get("name") or agent.name,
        "description": agent.description,
        "canonical_name": config.get("canonical_name"),
        "main": config.get("main", []),
        "input_schema": version.input_schema if version else None,
        "tools": config.get("tools") or [],
        "inherit_tools": bool(config.get("inherit_tools", False)),
        "metadata": metadata,
        "version": version.version if version else None,
        "created_at": iso(agent.created_at),
        "updated_at": iso(agent.updated_at),
    }
    for key, value in config.items():
        if key not in task and key not in HIDDEN_CONFIG and key not in TASK_FIELDS:
            task[key] = value
    return task


def execution_out(execution: Execution) -> dict[str, Any]:
    return {
        "id": str(execution.pk),
        "task_id": str(execution.agent_id),
        "status": julep_status(execution),
        "input": execution.input,
        "output": execution.output,
        "error": execution.error or None,
        "metadata": execution.metadata or {},
        "transition_count": execution.transition_count,
        "session_id": execution.session_id or None,
        "created_at": iso(execution.created_at),
        "updated_at": iso(execution.updated_at),
    }


def transition_type(step: Transition) -> str:
    """Our history types in Julep's vocabulary; unknown ones by the move they made."""
    kind = step.type
    if kind == "approved":
        return "resume"
    if kind == "rejected":
        return "error" if step.to_status in TERMINAL else "resume"
    if kind == "expired":
        return "error" if step.to_status in TERMINAL else "resume"
    if kind in TRANSITION_TYPES:
        return kind
    if step.to_status != step.from_status:
        if step.to_status == Status.COMPLETED:
            return "finish"
        if step.to_status in {Status.FAILED, Status.REJECTED}:
            return "error"
        if step.to_status == Status.CANCELLED:
            return "cancelled"
        if step.to_status in PARKED:
            return "wait"
        if step.from_status in PARKED:
            return "resume"
    return "step"


def _position(step: Transition) -> dict[str, Any]:
    """`current`: which workflow and step index the transition belongs to."""
    workflow, index = "main", 0
    if step.step_path:
        match = re.match(r"\s*([A-Za-z_][\w-]*)?\W*(\d+)?", step.step_path)
        if match:
            workflow = match.group(1) or "main"
            index = int(match.group(2)) if match.group(2) else 0
    return {"workflow": workflow, "step": index, "scope_id": str(step.execution_id)}


def transition_out(step: Transition) -> dict[str, Any]:
    return {
        "id": str(step.pk),
        "execution_id": str(step.execution_id),
        "type": transition_type(step),
        "output": step.output,
        "current": _position(step),
        "next": None,
        "step_label": step.step_path or None,
        "metadata": {
            "seq": step.seq,
            "native_type": step.type,
            "step_kind": step.step_kind or None,
            "from_status": step.from_status,
            "to_status": step.to_status,
            "message": step.message or None,
            "actor": step.actor_label,
        },
        "created_at": iso(step.created_at),
        "updated_at": iso(step.ended_at or step.created_at),
    }


def items(rows: list, shape) -> JsonResponse:
    return JsonResponse({"items": [shape(row) for row in rows]})


# --- paging ----------------------------------------------------------------------------------


def window(request: HttpRequest) -> tuple[int, int]:
    offset = common.int_param(request.GET, "offset", default=0, minimum=0, maximum=10**9)
    limit = common.int_param(
        request.GET, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT
    )
    return offset, limit


def ordering(request: HttpRequest) -> tuple[str, bool]:
    sort_by = request.GET.get("sort_by") or "created_at"
    direction = (request.GET.get("direction") or "desc").lower()
    errors = []
    if sort_by not in {"created_at", "updated_at"}:
        errors.append(field_error("sort_by", "must be created_at or updated_at"))
    if direction not in {"asc", "desc"}:
        errors.append(field_error("direction", "must be asc or desc"))
    if errors:
        raise ValidationFailed("invalid ordering", details=errors)
    return sort_by, direction == "desc"


def metadata_filter(request: HttpRequest) -> dict[str, Any]:
    """`metadata_filter.k=v` (SDK 2.x) or `metadata_filter={"k": "v"}` (older SDKs)."""
    import json

    wanted: dict[str, Any] = {}
    raw = request.GET.get("metadata_filter")
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise ValidationFailed(
                "metadata_filter must be a JSON object",
                details=[field_error("metadata_filter", "must be a JSON object")],
            )
        wanted.update(parsed)
    for key in request.GET:
        if key.startswith("metadata_filter."):
            wanted[key[len("metadata_filter.") :]] = selectors._metadata_value(request.GET[key])
    return wanted


def _ordered(qs, sort_by: str, descending: bool):
    return qs.order_by(f"-{sort_by}" if descending else sort_by, "-id" if descending else "id")


# --- lookups ---------------------------------------------------------------------------------


def _julep_agent(request: HttpRequest, agent_id: str) -> Agent:
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    if agent.type != AgentType.AGENT:
        raise NotFound(f"Agent {agent_id} not found")
    return agent


def _task(request: HttpRequest, task_id: str) -> Agent:
    agent = selectors.agent_get(workspace=request.workspace, agent_id=task_id)
    if agent.type != AgentType.WORKFLOW:
        raise NotFound(f"Task {task_id} not found")
    return agent


def _execution(request: HttpRequest, execution_id: str) -> Execution:
    return selectors.execution_get(workspace=request.workspace, execution_id=execution_id)


# --- agents ----------------------------------------------------------------------------------


class AgentIn(Schema):
    name: str
    about: str = ""
    model: str | None = None
    instructions: str | list[str] | None = None
    metadata: dict[str, Any] | None = None
    default_settings: dict[str, Any] | None = None
    default_system_template: str | None = None
    canonical_name: str | None = None
    project: str | None = None


@api.post("/agents", summary="Create an agent", tags=["agents"])
def agent_create(request: HttpRequest, body: AgentIn):
    require(request, Role.ADMIN)
    config = {
        ("system_prompt" if key == "instructions" else key): getattr(body, key)
        for key in AGENT_VERSION_FIELDS
        if getattr(body, key) is not None
    }
    with transaction.atomic():
        agent = services.agent_create(
            workspace=request.workspace,
            name=body.name,
            type=AgentType.AGENT,
            description=body.about,
            metadata=body.metadata,
        )
        services.agent_version_create(
            agent=agent,
            config=config,
            set_current=True,
            message="created through the Julep API",
        )
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent.pk)
    return JsonResponse(agent_out(agent), status=201)


@api.get("/agents", summary="List agents", tags=["agents"])
def agent_list(request: HttpRequest):
    offset, limit = window(request)
    sort_by, descending = ordering(request)
    agents = selectors.agent_list(workspace=request.workspace, type=AgentType.AGENT)
    for key, value in metadata_filter(request).items():
        agents = agents.filter(**{f"metadata__{key}": value})
    rows = list(_ordered(agents, sort_by, descending)[offset : offset + limit])
    return items(rows, agent_out)


@api.get("/agents/{agent_id}", summary="Get an agent", tags=["agents"])
def agent_get(request: HttpRequest, agent_id: str):
    return JsonResponse(agent_out(_julep_agent(request, agent_id)))


# --- tasks -----------------------------------------------------------------------------------


class TaskIn(Schema):
    """A Julep task; extra top-level keys are named sub-workflows (called by `yield` steps)."""

    name: str
    main: list[Any]
    description: str = ""
    canonical_name: str | None = None
    inherit_tools: bool | None = None
    input_schema: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None


def _task_config(request: HttpRequest, parent: Agent | None, body: TaskIn) -> dict[str, Any]:
    config: dict[str, Any] = {"name": body.name, "main": body.main}
    # Extra top-level keys are named sub-workflows (the SDK merges unknown keyword arguments
    # into the body); the engine runs Julep's step shapes as they are.
    raw = common.json_body(request)
    config.update({k: v for k, v in raw.items() if k not in TaskIn.model_fields})
    tools = list(body.tools or [])
    parent_config = (
        (parent.current_version.config or {}) if parent and parent.current_version else {}
    )
    if body.inherit_tools:
        known = {t.get("name") for t in tools if isinstance(t, dict)}
        tools += [
            t
            for t in parent_config.get("tools") or []
            if not (isinstance(t, dict) and t.get("name") in known)
        ]
    if tools:
        config["tools"] = tools
    if body.inherit_tools is not None:
        config["inherit_tools"] = body.inherit_tools
    if body.canonical_name:
        config["canonical_name"] = body.canonical_name
    # Prompt steps speak as the owning agent: its model and instructions come along.
    for key in ("model", "system_prompt"):
        if parent_config.get(key) is not None:
            config[key] = parent_config[key]
    return config


def _unique_name(workspace: Any, base: str) -> str:
    taken = set(
        Agent.objects.for_workspace(workspace)
        .filter(name__startswith=base[:190])
        .values_list("name", flat=True)
    )
    if base not in taken:
        return base
    n = 2
    while f"{base} #{n}" in taken:
        n += 1
    return f"{base} #{n}"


@api.post("/agents/{agent_id}/tasks", summary="Create a task", tags=["tasks"])
def task_create(request: HttpRequest, agent_id: str, body: TaskIn):
    require(request, Role.ADMIN)
    parent = _julep_agent(request, agent_id)
    config = _task_config(request, parent, body)
    with transaction.atomic():
        task = None
        for _ in range(5):  # two creates racing for the same name: take the next free one
            name = _unique_name(request.workspace, f"{parent.name}/{body.name}"[:190])
            try:
                task = services.agent_create(
                    workspace=request.workspace,
                    name=name,
                    type=AgentType.WORKFLOW,
                    description=body.description,
                    metadata={**(body.metadata or {}), TASK_LINK: str(parent.pk)},
                )
                break
            except Conflict:
                continue
        if task is None:
            raise Conflict(f"could not find a free name for task {body.name!r}")
        services.agent_version_create(
            agent=task,
            config=config,
            input_schema=body.input_schema,
            set_current=True,
            message="created through the Julep API",
        )
    task = selectors.agent_get(workspace=request.workspace, agent_id=task.pk)
    return JsonResponse(task_out(task), status=201)


@api.post(
    "/agents/{agent_id}/tasks/{task_id}",
    summary="Update a task: its new definition becomes the current version",
    tags=["tasks"],
)
def task_update(request: HttpRequest, agent_id: str, task_id: str, body: TaskIn):
    require(request, Role.ADMIN)
    parent = _julep_agent(request, agent_id)
    task = _task(request, task_id)
    if (task.metadata or {}).get(TASK_LINK) != str(parent.pk):
        raise NotFound(f"Task {task_id} not found for agent {agent_id}")
    with transaction.atomic():
        services.agent_update(
            agent=task,
            data={
                "description": body.description,
                "metadata": {**(body.metadata or {}), TASK_LINK: str(parent.pk)},
            },
        )
        services.agent_version_create(
            agent=task,
            config=_task_config(request, parent, body),
            input_schema=body.input_schema,
            set_current=True,
            message="updated through the Julep API",
        )
    task = selectors.agent_get(workspace=request.workspace, agent_id=task.pk)
    return JsonResponse(task_out(task))


@api.get("/agents/{agent_id}/tasks", summary="List an agent's tasks", tags=["tasks"])
def task_list(request: HttpRequest, agent_id: str):
    parent = _julep_agent(request, agent_id)
    offset, limit = window(request)
    sort_by, descending = ordering(request)
    tasks = selectors.agent_list(workspace=request.workspace, type=AgentType.WORKFLOW).filter(
        **{f"metadata__{TASK_LINK}": str(parent.pk)}
    )
    rows = list(_ordered(tasks, sort_by, descending)[offset : offset + limit])
    return items(rows, task_out)


@api.get("/tasks/{task_id}", summary="Get a task", tags=["tasks"])
def task_get(request: HttpRequest, task_id: str):
    return JsonResponse(task_out(_task(request, task_id)))


# --- executions ------------------------------------------------------------------------------


class ExecutionIn(Schema):
    input: Any
    metadata: dict[str, Any] | None = None
    # Julep lets a client pass these; they are the engine's to set, so they are ignored.
    output: Any = None
    error: str | None = None
    transition_count: int | None = None


class ChangeStatusIn(Schema):
    status: str
    input: Any = None
    reason: str | None = None


@api.post("/tasks/{task_id}/executions", summary="Start an execution", tags=["executions"])
def execution_create(request: HttpRequest, task_id: str, body: ExecutionIn):
    require(request, Role.REVIEWER)
    task = _task(request, task_id)
    execution, _ = services.execution_start(
        workspace=request.workspace,
        agent=task,
        input=body.input,
        metadata=body.metadata,
        actor=request.actor,
    )
    return JsonResponse(execution_out(execution), status=201)


@api.get("/tasks/{task_id}/executions", summary="List a task's executions", tags=["executions"])
def execution_list(request: HttpRequest, task_id: str):
    task = _task(request, task_id)
    offset, limit = window(request)
    sort_by, descending = ordering(request)
    executions = selectors.execution_list(
        workspace=request.workspace, filters=selectors.ExecutionFilters(agent_id=str(task.pk))
    )
    ordered = selectors.order_executions(executions, sort_by, "desc" if descending else "asc")
    return items(list(ordered[offset : offset + limit]), execution_out)


@api.get("/executions/{execution_id}", summary="Get an execution", tags=["executions"])
def execution_get(request: HttpRequest, execution_id: str):
    return JsonResponse(execution_out(_execution(request, execution_id)))


@api.put(
    "/executions/{execution_id}",
    summary="Cancel (status=cancelled) or resume with input (status=running)",
    tags=["executions"],
)
def execution_change_status(request: HttpRequest, execution_id: str, body: ChangeStatusIn):
    require(request, Role.REVIEWER)
    execution = _execution(request, execution_id)
    if body.status == "cancelled":
        services.execution_cancel(
            execution=execution, actor=request.actor, reason=body.reason or ""
        )
    elif body.status == "running":
        services.execution_resume(execution=execution, input=body.input, actor=request.actor)
    else:
        raise BadRequest(
            f"cannot change an execution's status to {body.status!r}: send 'cancelled' to "
            "cancel it or 'running' with input to resume it"
        )
    return JsonResponse(execution_out(execution))


# --- transitions -----------------------------------------------------------------------------


@api.get(
    "/executions/{execution_id}/transitions",
    summary="List an execution's transitions",
    tags=["transitions"],
)
def transition_list(request: HttpRequest, execution_id: str):
    execution = _execution(request, execution_id)
    offset, limit = window(request)
    sort_by, descending = ordering(request)
    scope = request.GET.get("scope_id")
    if scope and scope != str(execution.pk):
        return items([], transition_out)
    steps = selectors.transition_list(execution=execution)
    steps = steps.order_by("-seq" if descending else "seq")
    del sort_by  # transitions are immutable: created_at and updated_at order alike (by seq)
    return items(list(steps[offset : offset + limit]), transition_out)


@api.get(
    "/executions/{execution_id}/transitions/{transition_id}",
    summary="Get one transition",
    tags=["transitions"],
)
def transition_get(request: HttpRequest, execution_id: str, transition_id: str):
    execution = _execution(request, execution_id)
    step = None
    if transition_id.isdigit():
        step = selectors.transition_list(execution=execution).filter(pk=int(transition_id)).first()
    if step is None:
        raise NotFound(f"Transition {transition_id} not found")
    return JsonResponse(transition_out(step))


# --- streams ---------------------------------------------------------------------------------


def _load(execution_id: Any) -> Execution | None:
    return Execution.objects.filter(pk=execution_id).first()


def status_event_row(row: dict[str, Any]) -> dict[str, Any]:
    """The engine's ExecutionStatusEvent with the status in Julep's words."""
    from executions.live import streams

    event = streams.status_event(row)
    event["status"] = julep_status(
        Execution(status=row["status"], transition_count=row["transition_count"])
    )
    return event


@api.get(
    "/executions/{execution_id}/status.stream",
    summary="Server-sent status events until the execution finishes",
    tags=["executions"],
)
async def status_stream(request: HttpRequest, execution_id: str):
    """seed 000's ExecutionStatusEvent frames, one per change; closed after the terminal one."""
    from executions.live import streams

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
        if kind == "seq" and value.isdigit():
            return int(value)
    except (ValueError, UnicodeDecodeError):
        pass
    raise BadRequest("next_page_token is not valid")


def _transitions_after(execution_id: Any, seq: int) -> tuple[Execution | None, list[Transition]]:
    execution = _load(execution_id)
    steps = list(
        Transition.objects.filter(execution_id=execution_id, seq__gt=seq).order_by("seq")[:500]
    )
    return execution, steps


@api.get(
    "/executions/{execution_id}/transitions.stream",
    summary="Server-sent transitions; resumable with next_page_token",
    tags=["transitions"],
)
async def transition_stream(request: HttpRequest, execution_id: str):
    """One event per transition, `{"transition": {...}, "next_page_token": …}`. The stream
    ends once the execution has finished or is waiting on a person (input or approval) and
    every transition so far was sent; pass the last token back to continue after a resume."""
    execution = await sync_to_async(_execution)(request, execution_id)
    pk = execution.pk
    cursor = {"seq": _after(request.GET.get("next_page_token"))}

    async def read() -> tuple[Execution | None, list[Transition]]:
        return await sync_to_async(_transitions_after)(pk, cursor["seq"])

    async def render(snapshot) -> tuple[list[str], bool]:
        current, steps = snapshot
        frames = []
        for step in steps:
            cursor["seq"] = step.seq
            frames.append(
                common.sse_frame(
                    {
                        "transition": {
                            **transition_out(step),
                            "type": transition_type(step),
                            "output": step.output,
                            "created_at": iso(step.created_at),
                        },
                        "next_page_token": _token(step.seq),
                    }
                )
            )
        if current is None:
            return frames, True
        settled = current.status in TERMINAL or current.status in PARKED
        caught_up = cursor["seq"] >= current.transition_count
        return frames, settled and caught_up

    return common.sse_response(common.poll(read, render=render))


urlpatterns = [
    path("", api.urls),
    re_path(r"^(?P<rest>.*)$", not_found),
]
