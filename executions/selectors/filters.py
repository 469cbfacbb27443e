"""The list filters of executions (API list, dashboard list, live rows): parsed once here and
turned into SQL here, so every face filters the same way."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import connection
from django.db.models import Q, QuerySet
from django.db.models.fields.json import KeyTransform
from django.utils import timezone

from executions.errors import ValidationFailed, field_error
from executions.lifecycle import ALL_STATUSES
from executions.models import Agent, Execution, Workspace
from executions.selectors.common import parse_dt
from executions.selectors.pagination import one_pass_count


@dataclass
class ExecutionFilters:
    status: list[str] | None = None
    agent_id: str | None = None
    session_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    metadata: dict[str, str] | None = None
    q: str | None = None
    cost_above: Decimal | None = None
    parent_id: str | None = None

    @classmethod
    def from_params(cls, params: Any) -> ExecutionFilters:
        """Build from query params (a QueryDict or dict); bad values are a 422 naming the field."""
        get_list = (
            params.getlist
            if hasattr(params, "getlist")
            else (lambda k: [params[k]] if k in params and params[k] is not None else [])
        )
        errors = []
        statuses: list[str] = []
        for raw in get_list("status"):
            statuses.extend(s.strip() for s in str(raw).split(",") if s.strip())
        for s in statuses:
            if s not in ALL_STATUSES:
                errors.append(
                    field_error("status", f"unknown status {s!r}; one of {', '.join(ALL_STATUSES)}")
                )
        metadata = {}
        for raw in get_list("metadata"):
            key, sep, value = str(raw).partition("=")
            if not sep or not key:
                errors.append(field_error("metadata", f"{raw!r} must be key=value"))
            else:
                metadata[key.strip()] = value.strip()
        for key in params:
            if key.startswith("metadata.") or key.startswith("metadata["):
                name = key[len("metadata.") :] if key.startswith("metadata.") else key[9:-1]
                metadata[name] = params.get(key)
        created_after = parse_dt(params.get("created_after"), "created_after", errors)
        created_before = parse_dt(params.get("created_before"), "created_before", errors)
        cost_above = None
        if params.get("cost_above") not in (None, ""):
            try:
                cost_above = Decimal(str(params.get("cost_above")))
            except InvalidOperation:
                errors.append(field_error("cost_above", "must be a number"))
        agent_id = params.get("agent_id") or None
        if agent_id:
            try:
                uuid.UUID(str(agent_id))
            except ValueError:
                errors.append(field_error("agent_id", "must be a UUID"))
        if errors:
            raise ValidationFailed("invalid filter", details=errors)
        return cls(
            status=statuses or None,
            agent_id=agent_id,
            session_id=params.get("session_id") or None,
            created_after=created_after,
            created_before=created_before,
            metadata=metadata or None,
            q=(params.get("q") or params.get("search") or "").strip() or None,
            cost_above=cost_above,
            parent_id=params.get("parent_id") or None,
        )


def execution_list(*, workspace: Workspace, filters: ExecutionFilters) -> QuerySet:
    executions = Execution.objects.for_workspace(workspace)
    if filters.status:
        executions = executions.filter(status__in=filters.status)
    if filters.agent_id:
        executions = executions.filter(agent_id=filters.agent_id)
    if filters.session_id:
        executions = executions.filter(session_id=filters.session_id)
    if filters.created_after:
        executions = executions.filter(created_at__gte=filters.created_after)
    if filters.created_before:
        executions = executions.filter(created_at__lt=filters.created_before)
    if filters.cost_above is not None:
        executions = executions.filter(cost__gt=filters.cost_above)
    if filters.parent_id:
        executions = executions.filter(parent_id=filters.parent_id)
    contained_any = False
    for key, value in (filters.metadata or {}).items():
        wanted = metadata_value(value)
        executions = executions.filter(**{f"metadata__{key}": wanted})
        if connection.vendor == "postgresql" and (contained := _containment(key, wanted)):
            # Same rows, but `@>` is what the GIN (jsonb_path_ops) index on metadata serves;
            # the equality above stays as the exact test.
            executions = executions.filter(metadata__contains=contained)
            contained_any = True
    if filters.q:
        executions = executions.filter(_text_query(workspace, filters.q))
    if contained_any:
        # PostgreSQL cannot estimate `@>` (it guesses ~1 row), so with the agent and version
        # joined it joins every match before the sort: 1,662 rows of one tenant at 1M runs,
        # 34 ms, against 11-19 ms for the matches alone. The page's agents and versions come
        # in two small queries instead (docs/performance-history.md, "Scale").
        # And a page reads the matches once for its rows and its count (one_pass_count).
        return one_pass_count(executions.prefetch_related("agent", "agent_version"))
    return executions.select_related("agent", "agent_version")


def _containment(key: str, wanted: Any) -> dict | None:
    """{"a": {"b": wanted}} for the path a__b, or None when the path is not plain keys (an array
    index or a lookup such as `__gt`), which containment cannot express."""
    path = key.split("__")
    if any(part.isdigit() or not part for part in path) or path[-1] in KeyTransform.get_lookups():
        return None
    contained: Any = wanted
    for part in reversed(path):
        contained = {part: contained}
    return contained


def metadata_value(value: str) -> Any:
    """`metadata=k=42` matches the number 42 and `k=true` a boolean; anything else a string."""
    try:
        parsed = json.loads(value)
    except (ValueError, TypeError):
        return value
    return parsed if isinstance(parsed, (int, float, bool)) else value


def _text_query(workspace: Workspace, q: str) -> Q:
    """`q` matches a session id, an agent name (contains, any case), an execution id, or the
    start of a trace id. Agent names are resolved to ids first (the agents table is small) and
    a session is probed on its index, so the list query never ORs across a join and carries only
    the branches that can match."""
    compact = q.replace("-", "").lower()
    hexadecimal = bool(compact) and all(c in "0123456789abcdef" for c in compact)
    if hexadecimal and len(compact) == 32:
        # A full id: a primary-key lookup (or, rarely, a session named like one).
        return Q(pk=uuid.UUID(compact)) | Q(session_id=q)
    condition = Q(pk__in=[])
    agent_ids = list(
        Agent.objects.filter(workspace=workspace, name__icontains=q).values_list("pk", flat=True)
    )
    if agent_ids:
        condition |= Q(agent_id__in=agent_ids)
    if Execution.objects.filter(workspace=workspace, session_id=q).exists():
        condition |= Q(session_id=q)
    if hexadecimal:
        condition |= Q(trace_id__startswith=compact)
    return condition


def execution_matches(*, execution: Execution, filters: ExecutionFilters) -> bool:
    """Whether one execution is in the list `filters` select (live list rows, the list page's
    check of a new row): decided in memory when it can be, else by the database."""
    decided = execution_matches_in_memory(execution=execution, filters=filters)
    if decided is not None:
        return decided
    return (
        execution_list(workspace=execution.workspace, filters=filters)
        .filter(pk=execution.pk)
        .exists()
    )


def execution_matches_in_memory(*, execution: Any, filters: ExecutionFilters) -> bool | None:
    """Whether `execution` is in the list `filters` select, decided in memory exactly like
    execution_list decides in SQL. None when a filter cannot be decided here (a metadata path
    ending in a lookup, say): ask execution_matches, which asks the database."""
    # `is not None`, not truthiness: cost_above=0 is a filter (cost > 0), not "no filter".
    if filters.status and execution.status not in filters.status:
        return False
    if filters.agent_id and not _same_id(execution.agent_id, filters.agent_id):
        return False
    if filters.session_id and execution.session_id != filters.session_id:
        return False
    if filters.created_after and not _aware(execution.created_at) >= filters.created_after:
        return False
    if filters.created_before and not _aware(execution.created_at) < filters.created_before:
        return False
    if filters.cost_above is not None and not (
        execution.cost is not None and Decimal(execution.cost) > filters.cost_above
    ):
        return False
    if filters.parent_id and not _same_id(execution.parent_id, filters.parent_id):
        return False
    undecided = False
    for key, value in (filters.metadata or {}).items():
        found = _metadata_matches(execution.metadata, key, value)
        if found is False:
            return False
        undecided = undecided or found is None
    if filters.q and not _text_matches(execution, filters.q):
        return False
    return None if undecided else True


def _same_id(value: Any, wanted: str) -> bool:
    if value is None:
        return False
    try:
        return uuid.UUID(str(value)) == uuid.UUID(str(wanted))
    except ValueError:
        return False


def _aware(moment: datetime) -> datetime:
    return timezone.make_aware(moment, timezone.UTC) if timezone.is_naive(moment) else moment


def _metadata_matches(metadata: Any, key: str, value: str) -> bool | None:
    """`metadata__<key>=<value>` as execution_list builds it: `a__b` is a nested path, a number
    or boolean compares as JSON, anything else as a string."""
    path = key.split("__")
    if len(path) > 1 and path[-1] in KeyTransform.get_lookups():
        return None
    current = metadata
    for part in path:
        if isinstance(current, dict):
            if part.isdigit():
                return None  # the database reads a number as an array index here
            if part not in current:
                return False
            current = current[part]
        elif isinstance(current, list) and part.isdigit():
            index = int(part)
            if index >= len(current):
                return False
            current = current[index]
        else:
            return False
    wanted = metadata_value(value)
    if isinstance(wanted, bool) or isinstance(current, bool):
        return isinstance(wanted, bool) and isinstance(current, bool) and wanted is current
    if isinstance(wanted, (int, float)):
        return isinstance(current, (int, float)) and current == wanted
    return isinstance(current, str) and current == wanted


def _text_matches(execution: Any, q: str) -> bool:
    compact = q.replace("-", "").lower()
    hexadecimal = bool(compact) and all(c in "0123456789abcdef" for c in compact)
    if hexadecimal and len(compact) == 32:
        return execution.pk == uuid.UUID(compact) or execution.session_id == q
    if execution.session_id == q:
        return True
    if q.casefold() in (execution.agent.name or "").casefold():
        return True
    return hexadecimal and (execution.trace_id or "").startswith(compact)
