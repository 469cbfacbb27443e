"""`/api/v1/agents`: agents, their versions, and executing one."""

from __future__ import annotations

from asgiref.sync import async_to_sync
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from ninja import Query, Router

from executions import selectors, serializers, services
from executions.api import loopcreate
from executions.api import schemas as s
from executions.api.common import (
    ADMIN,
    REVIEWER,
    WRITE_ERRORS,
    body_doc,
    checked_body,
    data,
    page_out,
    replies,
    require,
)
from executions.api.params import PageParams
from executions.live import follow
from executions.validation import SafeStr, clean_text

router = Router(tags=["agents"])
Text = SafeStr(200)


@router.get("", summary="List agents", response=replies({200: s.AgentPage}))
def agent_list(
    request: HttpRequest,
    paging: Query[PageParams],
    name: SafeStr(200) | None = None,
    type: SafeStr(16) | None = None,
):
    agents = selectors.agent_list(workspace=request.workspace, name=name, type=type)
    return page_out(
        selectors.paginate(agents, page=paging.page, limit=paging.size), serializers.agent_out
    )


@router.post("", summary="Create an agent", response=replies({201: s.AgentReply}, *WRITE_ERRORS))
def agent_create(request: HttpRequest, body: s.AgentIn):
    require(request, ADMIN)
    agent = services.agent_create(
        workspace=request.workspace,
        name=body.name,
        type=body.type,
        description=body.description,
        metadata=body.metadata,
    )
    return data(serializers.agent_out(agent), status=201)


@router.get("/{agent_id}", summary="Get an agent", response=replies({200: s.AgentReply}, 404))
def agent_get(request: HttpRequest, agent_id: Text):
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    return data(serializers.agent_out(agent))


@router.patch(
    "/{agent_id}",
    summary="Update an agent's name, description or metadata",
    response=replies({200: s.AgentReply}, 404, *WRITE_ERRORS),
    openapi_extra=body_doc(s.AgentPatchIn),
)
def agent_update(request: HttpRequest, agent_id: Text):
    require(request, ADMIN)
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    changes = checked_body(request, s.AgentPatchIn)
    return data(serializers.agent_out(services.agent_update(agent=agent, data=changes)))


@router.delete(
    "/{agent_id}",
    summary="Delete an agent (refused while it has unfinished runs)",
    response=replies({204: None}, 404, 403, 409),
)
def agent_delete(request: HttpRequest, agent_id: Text):
    require(request, ADMIN)
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    services.agent_delete(agent=agent)
    return HttpResponse(status=204)


@router.get(
    "/{agent_id}/versions",
    summary="List an agent's versions",
    response=replies({200: s.VersionList}, 404),
)
def version_list(request: HttpRequest, agent_id: Text):
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    versions = agent.versions.select_related("agent").order_by("-number")
    return data([serializers.version_out(v) for v in versions])


@router.post(
    "/{agent_id}/versions",
    summary="Create a version (validated definition)",
    response=replies({201: s.VersionReply}, 404, *WRITE_ERRORS),
)
def version_create(request: HttpRequest, agent_id: Text, body: s.VersionIn):
    require(request, ADMIN)
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    version = services.agent_version_create(
        agent=agent,
        version=body.version,
        config=body.config,
        input_schema=body.input_schema,
        output_schema=body.output_schema,
        message=body.message or "",
        set_current=body.set_current,
        extras={
            "model_config": body.model_config_,
            "run_budget": body.run_budget,
            "approval_policy": body.approval_policy,
            "tools": body.tools,
        },
    )
    return data(serializers.version_out(version), status=201)


@router.get(
    "/{agent_id}/versions/{version_id}",
    summary="Get a version",
    response=replies({200: s.VersionReply}, 404),
)
def version_get(request: HttpRequest, agent_id: Text, version_id: Text):
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    version = selectors.agent_version_get(agent=agent, version_id=version_id)
    return data(serializers.version_out(version))


@router.api_operation(
    ["PUT", "POST"],
    "/{agent_id}/versions/{version_id}/promote",
    summary="Make a version current",
    response=replies({200: s.AgentReply}, 404, 403, 409),
)
def version_promote(request: HttpRequest, agent_id: Text, version_id: Text):
    require(request, ADMIN)
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    version = selectors.agent_version_get(agent=agent, version_id=version_id)
    return data(serializers.agent_out(services.agent_version_promote(agent=agent, version=version)))


EXECUTE_REPLIES = replies({200: s.ExecutionReply, 201: s.ExecutionReply}, 404, *WRITE_ERRORS)


@router.post(
    "/{agent_id}/execute",
    summary="Execute an agent (201 started; 200 an Idempotency-Key replay; sync: true waits)",
    response=EXECUTE_REPLIES,
)
def agent_execute(request: HttpRequest, agent_id: Text, body: s.ExecuteIn):
    return execute(request, agent_id, body)


def execute(request: HttpRequest, agent_ref: str, body: s.ExecuteIn) -> HttpResponse:
    """Shared by POST /agents/{id}/execute and POST /executions. A sync view, so a create runs
    whole on one of the API handler's threads (executions/api/handler.py); `sync: true` waits
    for the result on the event loop meanwhile, holding that thread (others take over)."""
    execution, created = start(request, agent_ref, body)
    if body.sync:
        execution = async_to_sync(follow.wait_settled)(
            execution.pk, timeout=settings.SYNC_EXECUTE_TIMEOUT_SECONDS
        )
    return data(serializers.execution_out(execution), status=201 if created else 200)


def start(request: HttpRequest, agent_ref: str, body: s.ExecuteIn):
    require(request, REVIEWER)
    key = request.headers.get("Idempotency-Key") or None
    clean_text(key, field="Idempotency-Key", max_length=200)
    agent = selectors.agent_get_by_id_or_name(workspace=request.workspace, ref=agent_ref)
    version = (
        selectors.agent_version_get(agent=agent, version_id=body.version_id)
        if body.version_id
        else None
    )
    started = services.execution_start(
        workspace=request.workspace,
        agent=agent,
        input=body.input,
        metadata=body.metadata,
        session_id=body.session_id,
        version=version,
        idempotency_key=key,
        actor=request.actor,
    )
    # The agent, its current version loaded by the start, for the creates on the event loop.
    loopcreate.remember(request.workspace, agent_ref, agent)
    return started
