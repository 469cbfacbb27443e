"""The list filters of executions (API list, dashboard list, live rows): parsed once here and
turned into SQL here, so every face filters the same way."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db.models import Q, QuerySet

from executions.errors import ValidationFailed, field_error
from executions.lifecycle import ALL_STATUSES
from executions.models import Execution, Workspace
from executions.selectors.common import parse_dt


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
    for key, value in (filters.metadata or {}).items():
        executions = executions.filter(**{f"metadata__{key}": metadata_value(value)})
    if filters.q:
        executions = executions.filter(_text_query(filters.q))
    return executions.select_related("agent", "agent_version")


def metadata_value(value: str) -> Any:
    """`metadata=k=42` matches the number 42 and `k=true` a boolean; anything else a string."""
    try:
        parsed = json.loads(value)
    except (ValueError, TypeError):
        return value
    return parsed if isinstance(parsed, (int, float, bool)) else value


def _text_query(q: str) -> Q:
    condition = Q(session_id=q) | Q(agent__name__icontains=q)
    compact = q.replace("-", "").lower()
    if all(c in "0123456789abcdef" for c in compact) and compact:
        if len(compact) == 32:
            condition |= Q(pk=uuid.UUID(compact))
        else:
            condition |= Q(trace_id__startswith=compact)
    return condition


def execution_matches(*, execution: Execution, filters: ExecutionFilters) -> bool:
    """Whether one execution is in the list `filters` select (live list updates)."""
    # `is not None`, not truthiness: cost_above=0 is a filter (cost > 0), not "no filter".
    if all(value is None for value in vars(filters).values()):
        return True
    return (
        execution_list(workspace=execution.workspace, filters=filters)
        .filter(pk=execution.pk)
        .exists()
    )
