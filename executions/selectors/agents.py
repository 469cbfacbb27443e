"""Reads for agents and their versions."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.db.models.fields.json import KeyTransform

from executions.errors import NotFound
from executions.models import Agent, AgentVersion, Workspace
from executions.selectors.common import parse_uuid


def agent_list(
    *, workspace: Workspace, name: str | None = None, type: str | None = None
) -> QuerySet:
    agents = Agent.objects.for_workspace(workspace).select_related("current_version")
    if name:
        agents = agents.filter(name__icontains=name)
    if type:
        agents = agents.filter(type=type)
    return agents.order_by("name")


def agent_get(*, workspace: Workspace, agent_id: Any) -> Agent:
    pk = parse_uuid(agent_id, field="agent_id", what="agent")
    # At most one row: no ORDER BY to compile (first() would add one; a create spent ~10 % of
    # its CPU compiling it).
    found = Agent.objects.for_workspace(workspace).select_related("current_version").filter(pk=pk)
    agent = next(iter(found), None)
    if agent is None:
        raise NotFound(f"agent {agent_id} not found")
    return agent


def agent_get_by_id_or_name(*, workspace: Workspace, ref: Any) -> Agent:
    try:
        return agent_get(workspace=workspace, agent_id=ref)
    except NotFound:
        agent = Agent.objects.for_workspace(workspace).filter(name=str(ref)).first()
        if agent is None:
            raise NotFound(f"agent {ref} not found") from None
        return agent


def agent_version_get(*, agent: Agent, version_id: Any) -> AgentVersion:
    pk = parse_uuid(version_id, field="version_id", what="version")
    version = agent.versions.filter(pk=pk).first()
    if version is None:
        raise NotFound(f"version {version_id} not found for agent {agent.pk}")
    return version


def agent_workflow_list(*, workspace: Workspace, owner: Agent) -> QuerySet:
    """The workflow agents that belong to `owner` (Julep's tasks of an agent)."""
    # The services module keeps the owner link under this metadata key (WORKFLOW_OWNER_KEY).
    return agent_list(workspace=workspace, type="workflow").filter(
        metadata__julep_agent_id=str(owner.pk)
    )


def agent_metadata_match(agents: QuerySet, *, wanted: dict[str, Any]) -> QuerySet:
    """The agents whose metadata holds each top-level `key: value` of `wanted`. Keys are taken
    literally (a key with `__` is not a lookup path), whatever characters they hold."""
    for i, (key, value) in enumerate(wanted.items()):
        name = f"metadata_{i}"
        agents = agents.alias(**{name: KeyTransform(key, "metadata")}).filter(**{name: value})
    return agents
