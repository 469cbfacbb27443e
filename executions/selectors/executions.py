"""Reads for one execution: the row, its tree of children, its transitions and streamed events."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from executions.errors import Expired, NotFound
from executions.models import Execution, ExecutionEvent, ExecutionTombstone, Transition, Workspace
from executions.selectors.common import parse_uuid


def execution_get(*, workspace: Workspace, execution_id: Any) -> Execution:
    pk = parse_uuid(execution_id, field="execution_id", what="execution")
    execution = (
        Execution.objects.for_workspace(workspace)
        .select_related("agent", "agent_version")
        .filter(pk=pk)
        .first()
    )
    if execution is None:
        if ExecutionTombstone.objects.filter(pk=pk, workspace=workspace).exists():
            raise Expired(
                f"execution {execution_id} expired: it was purged by the workspace's retention "
                f"policy ({workspace.retention_days} days)"
            )
        raise NotFound(f"execution {execution_id} not found")
    return execution


def execution_tree(*, execution: Execution, depth: int = 10) -> dict[str, Any]:
    """The execution with its children, recursively (bounded)."""
    children = []
    if depth > 0:
        for child in execution.children.select_related("agent", "agent_version").order_by("id"):
            children.append(execution_tree(execution=child, depth=depth - 1))
    return {"execution": execution, "children": children}


def transition_list(*, execution: Execution) -> QuerySet:
    return Transition.objects.filter(execution=execution).order_by("seq")


def transition_recent(*, execution: Execution, limit: int) -> tuple[list, int]:
    """The last `limit` transitions in order, and how many earlier ones were left out."""
    total = execution.transition_count
    rows = list(Transition.objects.filter(execution=execution).order_by("-seq")[:limit])
    rows.reverse()
    return rows, max(0, total - len(rows))


def transition_before(*, execution: Execution, seq: int, limit: int = 50) -> tuple[list, int]:
    """The `limit` transitions just before `seq`, in order, and how many earlier ones remain:
    the timeline's "load older" (an index range on (execution, seq), however long the run)."""
    rows = list(
        Transition.objects.filter(execution=execution, seq__lt=seq).order_by("-seq")[:limit]
    )
    rows.reverse()
    return rows, max(0, (rows[0].seq - 1) if rows else 0)


def execution_event_list(*, execution: Execution, limit: int = 1000) -> list:
    """The streamed events of an execution (content, thinking, tool_start…), oldest first."""
    rows = ExecutionEvent.objects.filter(execution=execution).order_by("-id")[:limit]
    return list(reversed(rows))
