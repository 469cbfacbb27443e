"""Reads for agents and their versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import Count, Max, Q, QuerySet

from executions.errors import NotFound
from executions.models import Agent, AgentVersion, Execution, Workspace
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
    agent = (
        Agent.objects.for_workspace(workspace)
        .select_related("current_version")
        .filter(pk=pk)
        .first()
    )
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


def agent_run_stats(*, workspace: Workspace, since: datetime) -> dict[Any, dict[str, Any]]:
    """Per agent id: runs since `since`, failures among them, and the last run's time."""
    recent = (
        Execution.objects.for_workspace(workspace)
        .filter(created_at__gte=since)
        .values("agent_id")
        .annotate(
            runs=Count("id"),
            failed=Count("id", filter=Q(status__in=["failed", "rejected"])),
        )
        .order_by()
    )
    stats: dict[Any, dict[str, Any]] = {
        row["agent_id"]: {"runs": row["runs"], "failed": row["failed"]} for row in recent
    }
    last = (
        Execution.objects.for_workspace(workspace)
        .values("agent_id")
        .annotate(last=Max("created_at"))
        .order_by()
    )
    for row in last:
        stats.setdefault(row["agent_id"], {"runs": 0, "failed": 0})["last"] = row["last"]
    return stats


def agent_workflow_list(*, workspace: Workspace, owner: Agent) -> QuerySet:
    """The workflow agents that belong to `owner` (Julep's tasks of an agent)."""
    # The services module keeps the owner link under this metadata key (WORKFLOW_OWNER_KEY).
    return agent_list(workspace=workspace, type="workflow").filter(
        metadata__julep_agent_id=str(owner.pk)
    )
