"""Reads. Every query on tenant data is scoped by workspace here, not by each caller."""

from __future__ import annotations

import base64
import json
import math
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum

from executions.errors import BadRequest, Expired, NotFound, ValidationFailed, field_error
from executions.lifecycle import ALL_STATUSES
from executions.models import (
    Agent,
    AgentVersion,
    ApiKey,
    Execution,
    ExecutionTombstone,
    Transition,
    Workspace,
)

ORDERABLE = {"created_at", "updated_at", "duration_ms", "cost", "started_at", "completed_at"}
MAX_LIMIT = 200


def parse_uuid(value: Any, *, field: str, what: str = "object") -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError):
        raise NotFound(f"{what} {value} not found", details={"field": field}) from None


# --- agents ----------------------------------------------------------------------------------


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


# --- executions ------------------------------------------------------------------------------


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
        created_after = _parse_dt(params.get("created_after"), "created_after", errors)
        created_before = _parse_dt(params.get("created_before"), "created_before", errors)
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


def _parse_dt(value: Any, field: str, errors: list) -> datetime | None:
    if value in (None, ""):
        return None
    from django.utils import timezone
    from django.utils.dateparse import parse_date, parse_datetime

    text = str(value).strip().replace(" ", "+") if "T" in str(value) else str(value).strip()
    try:
        parsed = parse_datetime(text)
        if parsed is None and (day := parse_date(text)) is not None:
            parsed = datetime(day.year, day.month, day.day)
    except ValueError:
        parsed = None
    if parsed is None:
        errors.append(field_error(field, "must be an ISO-8601 date or datetime"))
        return None
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, timezone.UTC)
    return parsed


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
        executions = executions.filter(**{f"metadata__{key}": _metadata_value(value)})
    if filters.q:
        executions = executions.filter(_text_query(filters.q))
    return executions.select_related("agent", "agent_version")


def _metadata_value(value: str) -> Any:
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


def order_executions(qs: QuerySet, ordering: str | None, direction: str | None = None) -> QuerySet:
    field = (ordering or "-created_at").strip()
    descending = field.startswith("-")
    field = field.lstrip("-+")
    if direction:
        if direction.lower() not in {"asc", "desc"}:
            raise ValidationFailed(
                "order direction must be asc or desc",
                details=[field_error("order_direction", "must be asc or desc")],
            )
        descending = direction.lower() == "desc"
    if field not in ORDERABLE:
        raise ValidationFailed(
            f"cannot order by {field!r}",
            details=[field_error("order_by", f"one of {', '.join(sorted(ORDERABLE))}")],
        )
    if field == "created_at":
        # id is a UUIDv7, so it orders like created_at and breaks ties for keyset paging.
        return qs.order_by("-id" if descending else "id")
    expression = f"-{field}" if descending else field
    nulls = {"nulls_last": True}
    from django.db.models import F

    order = F(field).desc(**nulls) if descending else F(field).asc(**nulls)
    del expression
    return qs.order_by(order, "-id" if descending else "id")


@dataclass
class Page:
    items: list
    total: int | None
    page: int
    limit: int
    next_cursor: str | None = None

    @property
    def pages(self) -> int:
        if self.total is None:
            return 0
        return max(1, math.ceil(self.total / self.limit)) if self.total else 0

    def meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"page": self.page, "limit": self.limit}
        if self.total is not None:
            meta.update(total=self.total, pages=self.pages)
        if self.next_cursor is not None or self.total is None:
            meta["next_cursor"] = self.next_cursor
        return meta


def page_params(params: Any) -> tuple[int, int]:
    errors = []
    page = _positive_int(params.get("page"), "page", 1, errors)
    limit = _positive_int(params.get("limit") or params.get("page_size"), "limit", 20, errors)
    if limit > MAX_LIMIT:
        errors.append(field_error("limit", f"must be at most {MAX_LIMIT}"))
    if errors:
        raise ValidationFailed("invalid pagination", details=errors)
    return page, limit


def _positive_int(value: Any, field: str, default: int, errors: list) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        errors.append(field_error(field, "must be a positive integer"))
        return default
    if number < 1:
        errors.append(field_error(field, "must be a positive integer"))
    return number


def paginate(qs: QuerySet, *, page: int, limit: int) -> Page:
    total = qs.order_by().count()
    items = list(qs[(page - 1) * limit : page * limit])
    return Page(items=items, total=total, page=page, limit=limit)


def encode_cursor(execution: Execution) -> str:
    return base64.urlsafe_b64encode(str(execution.pk).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> uuid.UUID:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return uuid.UUID(base64.urlsafe_b64decode(padded.encode()).decode())
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("cursor is not valid", details={"field": "cursor"}) from None


def keyset_page(qs: QuerySet, *, cursor: str | None, limit: int, descending: bool = True) -> Page:
    """Deep pages without COUNT: rows after the cursor's id in created order."""
    if cursor:
        anchor = decode_cursor(cursor)
        qs = qs.filter(pk__lt=anchor) if descending else qs.filter(pk__gt=anchor)
    qs = qs.order_by("-id" if descending else "id")
    rows = list(qs[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = encode_cursor(rows[-1]) if more and rows else None
    return Page(items=rows, total=None, page=1, limit=limit, next_cursor=next_cursor)


def execution_tree(*, execution: Execution, depth: int = 10) -> dict[str, Any]:
    """The execution with its children, recursively (bounded)."""
    children = []
    if depth > 0:
        for child in execution.children.select_related("agent", "agent_version").order_by("id"):
            children.append(execution_tree(execution=child, depth=depth - 1))
    return {"execution": execution, "children": children}


def transition_list(*, execution: Execution) -> QuerySet:
    return Transition.objects.filter(execution=execution).order_by("seq")


def execution_stats(*, workspace: Workspace, since: datetime | None = None) -> dict[str, Any]:
    qs = Execution.objects.for_workspace(workspace)
    if since:
        qs = qs.filter(created_at__gte=since)
    counts = dict(qs.values_list("status").annotate(n=Count("id")).order_by())
    totals = qs.aggregate(cost=Sum("cost"))
    return {
        "by_status": {status: counts.get(status, 0) for status in ALL_STATUSES},
        "total": sum(counts.values()),
        "cost": totals["cost"] or Decimal("0"),
    }


def apikey_list(*, workspace: Workspace | None = None) -> QuerySet:
    keys = ApiKey.objects.select_related("workspace").order_by("created_at")
    if workspace is not None:
        keys = keys.filter(workspace=workspace)
    return keys


# --- dashboard reads -------------------------------------------------------------------------


def execution_page_ordered(
    qs: QuerySet, *, ordering: str | None, cursor: str | None, limit: int
) -> Page:
    """Keyset page in any ORDERABLE order: the cursor carries (value, id) of the last row, so a
    deep page costs the same as the first (no OFFSET, no COUNT). NULLs sort last either way."""
    from django.db.models import F

    field = (ordering or "-created_at").strip()
    descending = field.startswith("-")
    field = field.lstrip("-+")
    if field not in ORDERABLE:
        raise ValidationFailed(
            f"cannot order by {field!r}",
            details=[field_error("ordering", f"one of {', '.join(sorted(ORDERABLE))}")],
        )
    if field == "created_at":
        return keyset_page(qs, cursor=cursor, limit=limit, descending=descending)
    id_order = "-id" if descending else "id"
    order = F(field).desc(nulls_last=True) if descending else F(field).asc(nulls_last=True)
    qs = qs.order_by(order, id_order)
    if cursor:
        value, anchor = _decode_value_cursor(cursor)
        beyond = "lt" if descending else "gt"
        if value is None:
            qs = qs.filter(**{f"{field}__isnull": True, f"pk__{beyond}": anchor})
        else:
            qs = qs.filter(
                Q(**{f"{field}__{beyond}": value})
                | Q(**{field: value, f"pk__{beyond}": anchor})
                | Q(**{f"{field}__isnull": True})
            )
    rows = list(qs[: limit + 1])
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = _encode_value_cursor(getattr(rows[-1], field), rows[-1].pk) if more else None
    return Page(items=rows, total=None, page=1, limit=limit, next_cursor=next_cursor)


def _encode_value_cursor(value: Any, pk: Any) -> str:
    raw = json.dumps(
        [
            value.isoformat()
            if hasattr(value, "isoformat")
            else str(value)
            if value is not None
            else None,
            str(pk),
        ]
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_value_cursor(cursor: str) -> tuple[Any, uuid.UUID]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value, pk = json.loads(base64.urlsafe_b64decode(padded.encode()).decode())
        return value, uuid.UUID(pk)
    except (ValueError, TypeError, UnicodeDecodeError):
        raise BadRequest("cursor is not valid", details={"field": "cursor"}) from None


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


def execution_hourly(*, workspace: Workspace, since: datetime) -> list[dict[str, Any]]:
    """Executions created per hour since `since`, split into finished well / badly / other."""
    from django.db.models.functions import TruncHour

    rows = (
        Execution.objects.for_workspace(workspace)
        .filter(created_at__gte=since)
        .annotate(hour=TruncHour("created_at"))
        .values("hour", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    return list(rows)


def execution_daily_cost(*, workspace: Workspace, since: datetime) -> list[dict[str, Any]]:
    """Cost per day per agent since `since`."""
    from django.db.models.functions import TruncDate

    rows = (
        Execution.objects.for_workspace(workspace)
        .filter(created_at__gte=since, cost__gt=0)
        .annotate(day=TruncDate("created_at"))
        .values("day", "agent__name")
        .annotate(cost=Sum("cost"), n=Count("id"))
        .order_by()
    )
    return list(rows)


def execution_duration_percentiles(
    *, workspace: Workspace, since: datetime, sample: int = 2000
) -> list[dict[str, Any]]:
    """p50 / p95 duration per agent over finished executions since `since` (the latest
    `sample` runs of each agent, so the overview stays fast on millions of rows)."""
    agents = Agent.objects.for_workspace(workspace).order_by("name")
    result = []
    for agent in agents:
        values = list(
            Execution.objects.filter(
                workspace=workspace,
                agent=agent,
                created_at__gte=since,
                duration_ms__isnull=False,
            )
            .order_by("-created_at")
            .values_list("duration_ms", flat=True)[:sample]
        )
        if not values:
            continue
        values.sort()
        result.append(
            {
                "agent": agent,
                "count": len(values),
                "p50": _percentile(values, 0.50),
                "p95": _percentile(values, 0.95),
            }
        )
    return result


def _percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    index = max(0, math.ceil(q * len(sorted_values)) - 1)
    return sorted_values[index]


def execution_event_list(*, execution: Execution, limit: int = 1000) -> list:
    """The streamed events of an execution (content, thinking, tool_start…), oldest first."""
    from executions.models import ExecutionEvent

    rows = ExecutionEvent.objects.filter(execution=execution).order_by("-id")[:limit]
    return list(reversed(rows))


def transition_recent(*, execution: Execution, limit: int) -> tuple[list, int]:
    """The last `limit` transitions in order, and how many earlier ones were left out."""
    total = execution.transition_count
    rows = list(Transition.objects.filter(execution=execution).order_by("-seq")[:limit])
    rows.reverse()
    return rows, max(0, total - len(rows))


def savedview_list(*, workspace: Workspace) -> QuerySet:
    from executions.models import SavedView

    return SavedView.objects.filter(workspace=workspace).select_related("created_by")


def membership_list(*, workspace: Workspace) -> QuerySet:
    from executions.models import Membership

    return (
        Membership.objects.filter(workspace=workspace)
        .select_related("user")
        .order_by("user__username")
    )


def agent_run_stats(*, workspace: Workspace, since: datetime) -> dict[Any, dict[str, Any]]:
    """Per agent id: runs since `since`, failures among them, and the last run's time."""
    from django.db.models import Max

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
