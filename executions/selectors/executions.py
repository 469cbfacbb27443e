"""Reads for one execution: the row, its tree of children, its transitions and streamed events."""

from __future__ import annotations

import uuid
from typing import Any

from django.db import connections
from django.db.models import QuerySet

from executions.errors import Expired, NotFound
from executions.models import (
    Agent,
    AgentVersion,
    Execution,
    ExecutionEvent,
    ExecutionTombstone,
    Transition,
    Workspace,
)
from executions.selectors.common import parse_uuid

# The hot read of the API and every compat face (programs poll it): one query written once,
# its rows turned into models by converters worked out once per database, so a request
# spends no time compiling ORM SQL or in RawQuerySet's per-query column mapping (a third and
# then a fifth of a GET's CPU; see docs/performance-history.md, "API"). The agent and version come
# back partly loaded (their other fields load on first use).
_EXECUTION_FIELDS = tuple(Execution._meta.concrete_fields)
_AGENT_FIELDS = ("id", "workspace_id", "name", "type")
_VERSION_FIELDS = ("id", "agent_id", "number", "version", "config")
_LEAN_SQL = (
    "SELECT "
    + ", ".join(f'e."{f.column}"' for f in _EXECUTION_FIELDS)
    + ', a."name", a."type", v."number", v."version", v."config" '
    f'FROM "{Execution._meta.db_table}" e '
    f'JOIN "{Agent._meta.db_table}" a ON a."id" = e."agent_id" '
    f'LEFT JOIN "{AgentVersion._meta.db_table}" v ON v."id" = e."agent_version_id" '
    'WHERE e."id" = %s AND e."workspace_id" = %s'
)
# Per database alias: for each selected column, the converters the ORM would apply.
_converters: dict[str, list[tuple[int, list, Any]]] = {}


def _lean_converters(connection) -> list[tuple[int, list, Any]]:
    found = _converters.get(connection.alias)
    if found is None:
        fields = [
            *_EXECUTION_FIELDS,
            Agent._meta.get_field("name"),
            Agent._meta.get_field("type"),
            *(AgentVersion._meta.get_field(n) for n in ("number", "version", "config")),
        ]
        found = []
        for i, field in enumerate(fields):
            column = field.get_col(field.model._meta.db_table)
            funcs = connection.ops.get_db_converters(column) + field.get_db_converters(connection)
            if funcs:
                found.append((i, funcs, column))
        _converters[connection.alias] = found
    return found


def _lean_params(connection, *, workspace: Workspace, pk: Any) -> list:
    return [
        Execution._meta.pk.get_db_prep_value(pk, connection),
        Workspace._meta.pk.get_db_prep_value(workspace.pk, connection),
    ]


def _lean_build(connection, row: Any) -> Execution:
    """The models from a row of _LEAN_SQL (also for the event-loop read's row, fetched with
    the same adapters: executions/api/loopread.py)."""
    db = Execution.objects.db
    row = list(row)
    for i, funcs, column in _lean_converters(connection):
        value = row[i]
        for func in funcs:
            value = func(value, column, connection)
        row[i] = value
    n = len(_EXECUTION_FIELDS)
    execution = Execution.from_db(db, None, row[:n])
    agent_name, agent_type, number, label, config = row[n:]
    execution.agent = Agent.from_db(
        db, _AGENT_FIELDS, (execution.agent_id, execution.workspace_id, agent_name, agent_type)
    )
    if execution.agent_version_id is None:
        execution.agent_version = None
    else:
        execution.agent_version = AgentVersion.from_db(
            db,
            _VERSION_FIELDS,
            (execution.agent_version_id, execution.agent_id, number, label, config),
        )
    return execution


def _execution_lean(*, workspace: Workspace, pk: Any) -> Execution | None:
    connection = connections[Execution.objects.db]
    with connection.cursor() as cursor:
        cursor.execute(_LEAN_SQL, _lean_params(connection, workspace=workspace, pk=pk))
        row = cursor.fetchone()
    return None if row is None else _lean_build(connection, row)


def execution_find(*, workspace: Workspace, execution_id: str) -> Execution | None:
    """The execution by id in the workspace, or None (a malformed id, another workspace's, or
    none at all): the API's fast read (executions/api/fastpath.py), which leaves every
    None to the full route to explain."""
    try:
        pk = uuid.UUID(execution_id)
    except (ValueError, TypeError, AttributeError):
        return None
    return _execution_lean(workspace=workspace, pk=pk)


def execution_get(*, workspace: Workspace, execution_id: Any) -> Execution:
    pk = parse_uuid(execution_id, field="execution_id", what="execution")
    execution = _execution_lean(workspace=workspace, pk=pk)
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
