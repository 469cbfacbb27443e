"""The older Julep dialect at `/julep/v0`: the 0.3.9 Python SDK of seed 004 (`julep.managers.task`)
with `Client(api_key=…, base_url="http://host/julep/v0")`.

Same data as the 2.21 face (/julep): a task is a workflow agent that belongs to an agent, made
by services.agent_workflow_create; only the shapes of that era differ:
- writes answer `ResourceCreatedResponse` (`{id, created_at, jobs}`), which the SDK merges with
  what it sent; reads answer bare lists (`tasks.list`) and a one-element list of executions
  (`get_task_execution`), each with `arguments`;
- a task names its tools in `tools_available` (the agent's tools by name, else Steward's);
- a tool step is `{tool_id, arguments}` (the engine's `{tool, arguments}`);
- statuses: queued | starting | running | awaiting_input | succeeded | failed | cancelled.
Why a mount of its own instead of telling the SDKs apart by their headers: docs/decisions.md,
"Compat".
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import path, re_path
from django.views.decorators.csrf import csrf_exempt
from ninja import Query

from executions import selectors, services
from executions.compat import common
from executions.compat import julep_schemas as v
from executions.compat.common import reply, require
from executions.compat.fields import FaceAPI, Text
from executions.compat.julep_schemas import replies
from executions.compat.julep_shapes import julep_status, render_error
from executions.errors import NotFound, ValidationFailed, field_error
from executions.models import Agent, AgentType, Execution, Role
from executions.serializers import iso
from executions.services.agents import WORKFLOW_OWNER_KEY

Id = Text(64)
Name = Text(200, named=True)

api = FaceAPI(
    title="Steward — Julep 0.x dialect",
    version="julep-0.3.9",
    description="The tasks API of the Julep 0.3.9 Python SDK (seed 004) over Steward: "
    '`Client(api_key=…, base_url="http://host/julep/v0")`. Authenticate with '
    "`Authorization: Bearer <key>`. The julep 2.21 SDK uses /julep.",
    auth=common.AUTH,
    urls_namespace="julep_v0",
    docs_url="/docs",
)
common.install_error_handlers(api, render_error)


@csrf_exempt  # an API path: a POST to an unknown one is a JSON 404, not the CSRF page
def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    return render_error(
        request, common.Problem(404, f"no Julep 0.x endpoint at {request.path}", "not_found")
    )


# --- steps: the 0.x tool step is {tool_id, arguments}; the engine's is {tool, arguments} -----


def _steps_in(steps: list[dict[str, Any]], where: str, renamed: dict[str, str]) -> list:
    return [_step_in(step, f"{where}[{i}]", renamed) for i, step in enumerate(steps)]


def _step_in(step: Any, where: str, renamed: dict[str, str]) -> Any:
    if not isinstance(step, dict):
        return step
    if "tool_id" in step and "tool" not in step:
        renamed[f"config.{where}.tool"] = f"{where}.tool_id"
        step = {("tool" if k == "tool_id" else k): v for k, v in step.items()}
    for branch in ("then", "else"):
        if isinstance(step.get(branch), dict):
            step = {**step, branch: _step_in(step[branch], f"{where}.{branch}", renamed)}
    return step


def _step_out(step: Any) -> Any:
    if not isinstance(step, dict):
        return step
    if isinstance(step.get("tool"), str):
        step = {("tool_id" if k == "tool" else k): v for k, v in step.items()}
    for branch in ("then", "else"):
        if isinstance(step.get(branch), dict):
            step = {**step, branch: _step_out(step[branch])}
    return step


def _renamed(exc: ValidationFailed, renamed: dict[str, str]) -> ValidationFailed:
    """The definition check names the engine's fields (config.main[1].tool, config.tools[0]);
    the client sent main[1].tool_id and tools_available[0]."""
    fields = []
    for item in exc.details if isinstance(exc.details, list) else []:
        field = str(item.get("field", "")) if isinstance(item, dict) else ""
        if field in renamed:
            field = renamed[field]
        elif field.startswith("config.tools"):
            field = "tools_available" + field[len("config.tools") :]
        fields.append({**item, "field": field} if isinstance(item, dict) else item)
    return ValidationFailed(exc.message, details=fields or exc.details)


# --- shapes ----------------------------------------------------------------------------------


def _tool_names(config: dict[str, Any]) -> list[str] | None:
    """A task's tools by name: bare names, Steward's {name} entries, Julep's {function: {name}}."""
    names = []
    for tool in config.get("tools") or []:
        if isinstance(tool, dict):
            function = tool.get("function") if isinstance(tool.get("function"), dict) else {}
            tool = tool.get("name") or function.get("name")
        if isinstance(tool, str) and tool:
            names.append(tool)
    return names or None


def created_out(pk: Any, created_at: Any) -> dict[str, Any]:
    return {"id": str(pk), "created_at": iso(created_at), "jobs": []}


def agent_out(agent: Agent) -> dict[str, Any]:
    config = (agent.current_version.config if agent.current_version else None) or {}
    model = config.get("model")
    return {
        "id": str(agent.pk),
        "name": agent.name,
        "about": agent.description,
        "model": model if isinstance(model, str) else "",
        "instructions": config.get("system_prompt") or [],
        "default_settings": config.get("default_settings") or {},
        "metadata": agent.metadata or {},
        "created_at": iso(agent.created_at),
        "updated_at": iso(agent.updated_at),
    }


def task_out(task: Agent) -> dict[str, Any]:
    version = task.current_version
    config = (version.config if version else None) or {}
    return {
        "id": str(task.pk),
        "agent_id": (task.metadata or {}).get(WORKFLOW_OWNER_KEY) or "",
        "name": config.get("name") or task.name,
        "description": task.description or None,
        "tools_available": _tool_names(config),
        "input_schema": version.input_schema if version else None,
        "main": [_step_out(step) for step in config.get("main", [])],
        "created_at": iso(task.created_at),
        "updated_at": iso(task.updated_at),
    }


def execution_out(execution: Execution) -> dict[str, Any]:
    arguments = execution.input
    return {
        "id": str(execution.pk),
        "task_id": str(execution.agent_id),
        "status": julep_status(execution),
        "arguments": arguments if isinstance(arguments, dict) else {"input": arguments},
        "user_id": None,
        "session_id": execution.session_id or None,
        "output": execution.output,
        "error": execution.error or None,
        "created_at": iso(execution.created_at),
        "updated_at": iso(execution.updated_at),
    }


# --- lookups ---------------------------------------------------------------------------------


def _agent(request: HttpRequest, agent_id: str) -> Agent:
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    if agent.type != AgentType.AGENT:
        raise NotFound(f"Agent {agent_id} not found")
    return agent


def _task(request: HttpRequest, agent: Agent, task_id: str) -> Agent:
    task = selectors.agent_get(workspace=request.workspace, agent_id=task_id)
    if task.type != AgentType.WORKFLOW or (task.metadata or {}).get(WORKFLOW_OWNER_KEY) != str(
        agent.pk
    ):
        raise NotFound(f"Task {task_id} not found for agent {agent.pk}")
    return task


# --- agents ----------------------------------------------------------------------------------


@api.post(
    "/agents", summary="Create an agent", tags=["agents"], response=replies({201: v.CreatedV0})
)
def agent_create(request: HttpRequest, body: v.AgentV0In):
    require(request, Role.ADMIN)
    config: dict[str, Any] = {
        "model": body.model,
        "system_prompt": body.instructions or None,
        "default_settings": body.default_settings or None,
        "tools": [t.model_dump(exclude_none=True) for t in body.tools or []] or None,
    }
    agent = services.agent_create_with_version(
        workspace=request.workspace,
        name=body.name,
        description=body.about or "",
        metadata=body.metadata,
        config={k: v for k, v in config.items() if v is not None},
        message="created through the Julep 0.x API",
    )
    return reply(created_out(agent.pk, agent.created_at), status=201)


@api.get(
    "/agents",
    summary="List agents",
    tags=["agents"],
    response=replies({200: v.AgentV0List}),
    openapi_extra={"parameters": [v.METADATA_FILTER]},
)
def agent_list(
    request: HttpRequest,
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=10**9),
):
    agents = selectors.agent_metadata_match(
        selectors.agent_list(workspace=request.workspace, type=AgentType.AGENT),
        wanted=common.metadata_filter(request),
    )
    rows = agents.order_by("-created_at", "-id")[offset : offset + limit]
    return reply({"items": [agent_out(a) for a in rows]})


@api.get(
    "/agents/{agent_id}",
    summary="Get an agent",
    tags=["agents"],
    response=replies({200: v.AgentV0Out}, 404),
)
def agent_get(request: HttpRequest, agent_id: Id):
    return reply(agent_out(_agent(request, agent_id)))


# --- tasks -----------------------------------------------------------------------------------


@api.get(
    "/agents/{agent_id}/tasks",
    summary="List an agent's tasks (a bare list)",
    tags=["tasks"],
    response=replies({200: list[v.TaskV0Out]}, 404),
)
def task_list(request: HttpRequest, agent_id: Id):
    owner = _agent(request, agent_id)
    tasks = selectors.agent_workflow_list(workspace=request.workspace, owner=owner)
    return reply([task_out(t) for t in tasks.order_by("-created_at", "-id")[:1000]])


@api.post(
    "/agents/{agent_id}/tasks",
    summary="Create a task",
    tags=["tasks"],
    response=replies({201: v.CreatedV0}, 403, 404, 409, 413),
)
def task_create(request: HttpRequest, agent_id: Id, body: v.TaskV0In):
    require(request, Role.ADMIN)
    owner = _agent(request, agent_id)
    renamed: dict[str, str] = {}
    try:
        task = services.agent_workflow_create(
            owner=owner,
            name=body.name,
            definition={"main": _steps_in(body.main, "main", renamed)},
            description=body.description or "",
            tool_names=body.tools_available,
            input_schema=body.input_schema,
            message="created through the Julep 0.x API",
        )
    except ValidationFailed as exc:
        raise _renamed(exc, renamed) from None
    return reply(created_out(task.pk, task.created_at), status=201)


@api.get(
    "/agents/{agent_id}/tasks/{task_id}",
    summary="Get a task",
    tags=["tasks"],
    response=replies({200: v.TaskV0Out}, 404),
)
def task_get(request: HttpRequest, agent_id: Id, task_id: Id):
    return reply(task_out(_task(request, _agent(request, agent_id), task_id)))


# --- executions ------------------------------------------------------------------------------


@api.post(
    "/agents/{agent_id}/tasks/{task_id}/executions",
    summary="Start an execution of a task",
    tags=["executions"],
    response=replies({201: v.CreatedV0}, 403, 404, 409, 413),
)
def execution_start(request: HttpRequest, agent_id: Id, task_id: Id, body: v.ExecutionV0In):
    require(request, Role.REVIEWER)
    task = _task(request, _agent(request, agent_id), task_id)
    if body.task_id != task_id:
        raise ValidationFailed(
            "task_id must be the task in the path",
            details=[field_error("task_id", f"must be {task_id}, the task in the path")],
        )
    execution, _ = services.execution_start(
        workspace=request.workspace, agent=task, input=body.arguments, actor=request.actor
    )
    return reply(created_out(execution.pk, execution.created_at), status=201)


@api.get(
    "/tasks/{task_id}/executions/{execution_id}",
    summary="Get an execution of a task (a one-element list, as the 0.x API answered)",
    tags=["executions"],
    response=replies({200: list[v.ExecutionV0Out]}, 404),
)
def execution_get(request: HttpRequest, task_id: Id, execution_id: Id):
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    if execution.agent_id != selectors.parse_uuid(task_id, field="task_id", what="task"):
        raise NotFound(f"execution {execution_id} not found for task {task_id}")
    return reply([execution_out(execution)])


urlpatterns = [
    path("", common.face_urls(api, render_error)),
    re_path(r"^(?P<rest>.*)$", not_found),
]
