"""The Julep dialect at `/julep` (the `julep` 2.21 SDK with `base_url=http://host/julep`).

Shapes only: requests are parsed by the schemas in julep_schemas, answers are drawn by
julep_shapes, and the work is done by the same services, selectors and lifecycle as the native
API. The older SDK (0.3.9, seed 004) has its own face at `/julep/v0` (julep_v0; the reasons are
in docs/decisions.md, "Compat").
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt

from executions import selectors, services
from executions.compat import common, julep_transitions, julep_v0
from executions.compat import julep_schemas as s
from executions.compat.common import reply, require
from executions.compat.fields import FaceAPI
from executions.compat.julep_schemas import Direction, Id, Limit, Offset, SortBy
from executions.compat.julep_shapes import (
    agent_out,
    execution_out,
    julep_status,
    render_error,
    task_out,
    transition_type,
)
from executions.errors import BadRequest, NotFound
from executions.models import Agent, AgentType, Execution, Role

__all__ = ["api", "julep_status", "render_error", "transition_type", "urlpatterns"]

AGENT_VERSION_FIELDS = (
    "model",
    "instructions",
    "default_settings",
    "default_system_template",
    "canonical_name",
    "project",
)

api = FaceAPI(
    title="Steward — Julep dialect",
    version="julep-2.21",
    description="The Julep executions API over Steward (the `julep` 2.21 SDK). Authenticate "
    "with `Authorization: Bearer <key>`. The 0.3.9 SDK has its own face at /julep/v0.",
    auth=common.AUTH,
    urls_namespace="julep",
    docs_url="/docs",
)
common.install_error_handlers(api, render_error)
api.add_router("", julep_transitions.router)


@csrf_exempt  # an API path: a POST to an unknown one is a JSON 404, not the CSRF page
def not_found(request: HttpRequest, rest: str = "") -> HttpResponse:
    return render_error(
        request, common.Problem(404, f"no Julep endpoint at {request.path}", "not_found")
    )


# --- lookups and parameters ------------------------------------------------------------------


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


def _ordered(qs, sort_by: str, direction: str):
    descending = direction == "desc"
    return qs.order_by(f"-{sort_by}" if descending else sort_by, "-id" if descending else "id")


# --- agents ----------------------------------------------------------------------------------


@api.post(
    "/agents", summary="Create an agent", tags=["agents"], response=s.replies({201: s.AgentOut})
)
def agent_create(request: HttpRequest, body: s.AgentIn):
    require(request, Role.ADMIN)
    config = {
        ("system_prompt" if key == "instructions" else key): getattr(body, key)
        for key in AGENT_VERSION_FIELDS
        if getattr(body, key) is not None
    }
    agent = services.agent_create_with_version(
        workspace=request.workspace,
        name=body.name,
        description=body.about,
        metadata=body.metadata,
        config=config,
        message="created through the Julep API",
    )
    return reply(agent_out(agent), status=201)


@api.get(
    "/agents",
    summary="List agents",
    tags=["agents"],
    response=s.replies({200: s.AgentList}),
    openapi_extra={"parameters": [s.METADATA_FILTER]},
)
def agent_list(
    request: HttpRequest,
    limit: int = Limit,
    offset: int = Offset,
    sort_by: SortBy = "created_at",
    direction: Direction = "desc",
):
    agents = selectors.agent_metadata_match(
        selectors.agent_list(workspace=request.workspace, type=AgentType.AGENT),
        wanted=common.metadata_filter(request),
    )
    rows = _ordered(agents, sort_by, direction)[offset : offset + limit]
    return reply({"items": [agent_out(a) for a in rows]})


@api.get(
    "/agents/{agent_id}",
    summary="Get an agent",
    tags=["agents"],
    response=s.replies({200: s.AgentOut}, 404),
)
def agent_get(request: HttpRequest, agent_id: Id):
    return reply(agent_out(_julep_agent(request, agent_id)))


# --- tasks -----------------------------------------------------------------------------------


def _definition(request: HttpRequest, body: s.TaskIn) -> dict[str, Any]:
    """The task's steps: `main`, plus extra top-level keys, which are named sub-workflows (the
    SDK merges unknown keyword arguments into the body; ninja's schemas drop extra keys, so they
    are read from the body itself, checked like every other value)."""
    definition: dict[str, Any] = {"main": body.main}
    extra = common.json_body(request)
    definition.update({k: v for k, v in extra.items() if k not in s.TaskIn.model_fields})
    if body.canonical_name:
        definition["canonical_name"] = body.canonical_name
    return definition


@api.post(
    "/agents/{agent_id}/tasks",
    summary="Create a task",
    tags=["tasks"],
    response=s.replies({201: s.TaskOut}, 403, 404, 409, 413),
)
def task_create(request: HttpRequest, agent_id: Id, body: s.TaskIn):
    require(request, Role.ADMIN)
    owner = _julep_agent(request, agent_id)
    task = services.agent_workflow_create(
        owner=owner,
        name=body.name,
        definition=_definition(request, body),
        description=body.description or "",
        metadata=body.metadata,
        tools=body.tools,
        inherit_tools=body.inherit_tools,
        input_schema=body.input_schema,
        message="created through the Julep API",
    )
    task = selectors.agent_get(workspace=request.workspace, agent_id=task.pk)
    return reply(task_out(task), status=201)


@api.post(
    "/agents/{agent_id}/tasks/{task_id}",
    summary="Update a task: its new definition becomes the current version",
    tags=["tasks"],
    response=s.replies({200: s.TaskOut}, 403, 404, 409, 413),
)
def task_update(request: HttpRequest, agent_id: Id, task_id: Id, body: s.TaskIn):
    require(request, Role.ADMIN)
    owner = _julep_agent(request, agent_id)
    task = services.agent_workflow_update(
        owner=owner,
        workflow=_task(request, task_id),
        name=body.name,
        definition=_definition(request, body),
        description=body.description or "",
        metadata=body.metadata,
        tools=body.tools,
        inherit_tools=body.inherit_tools,
        input_schema=body.input_schema,
        message="updated through the Julep API",
    )
    task = selectors.agent_get(workspace=request.workspace, agent_id=task.pk)
    return reply(task_out(task))


@api.get(
    "/agents/{agent_id}/tasks",
    summary="List an agent's tasks",
    tags=["tasks"],
    response=s.replies({200: s.TaskList}, 404),
)
def task_list(
    request: HttpRequest,
    agent_id: Id,
    limit: int = Limit,
    offset: int = Offset,
    sort_by: SortBy = "created_at",
    direction: Direction = "desc",
):
    owner = _julep_agent(request, agent_id)
    tasks = selectors.agent_workflow_list(workspace=request.workspace, owner=owner)
    rows = _ordered(tasks, sort_by, direction)[offset : offset + limit]
    return reply({"items": [task_out(t) for t in rows]})


@api.get(
    "/tasks/{task_id}",
    summary="Get a task",
    tags=["tasks"],
    response=s.replies({200: s.TaskOut}, 404),
)
def task_get(request: HttpRequest, task_id: Id):
    return reply(task_out(_task(request, task_id)))


# --- executions ------------------------------------------------------------------------------


@api.post(
    "/tasks/{task_id}/executions",
    summary="Start an execution",
    tags=["executions"],
    response=s.replies({201: s.ExecutionOut}, 403, 404, 409, 413),
)
def execution_create(request: HttpRequest, task_id: Id, body: s.ExecutionIn):
    require(request, Role.REVIEWER)
    execution, _ = services.execution_start(
        workspace=request.workspace,
        agent=_task(request, task_id),
        input=body.input,
        metadata=body.metadata,
        actor=request.actor,
    )
    return reply(execution_out(execution), status=201)


@api.get(
    "/tasks/{task_id}/executions",
    summary="List a task's executions",
    tags=["executions"],
    response=s.replies({200: s.ExecutionList}, 404),
)
def execution_list(
    request: HttpRequest,
    task_id: Id,
    limit: int = Limit,
    offset: int = Offset,
    sort_by: SortBy = "created_at",
    direction: Direction = "desc",
):
    task = _task(request, task_id)
    executions = selectors.execution_list(
        workspace=request.workspace, filters=selectors.ExecutionFilters(agent_id=str(task.pk))
    )
    ordered = selectors.order_executions(executions, sort_by, direction)
    return reply({"items": [execution_out(e) for e in ordered[offset : offset + limit]]})


@api.get(
    "/executions/{execution_id}",
    summary="Get an execution",
    tags=["executions"],
    response=s.replies({200: s.ExecutionOut}, 404),
)
def execution_get(request: HttpRequest, execution_id: Id):
    return reply(execution_out(_execution(request, execution_id)))


@api.put(
    "/executions/{execution_id}",
    summary="Cancel (status=cancelled) or resume with input (status=running)",
    tags=["executions"],
    response=s.replies({200: s.ExecutionOut}, 403, 404, 409, 413),
)
def execution_change_status(request: HttpRequest, execution_id: Id, body: s.ChangeStatusIn):
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
    return reply(execution_out(execution))


urlpatterns = [
    path("v0/", include(julep_v0.urlpatterns)),
    path("", common.face_urls(api, render_error)),
    re_path(r"^(?P<rest>.*)$", not_found),
]
