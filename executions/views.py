"""Dashboard pages (thin: read through selectors, write through services, render templates).

Fragments the live consumer pushes come from the same templates as the pages, as named
partials (`executions/list.html#row`…); the builders here (`row_html`, `detail_fragments`…)
are shared by the views and by `executions.consumers`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import yaml
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from executions import selectors, services
from executions.errors import Conflict, Forbidden, NotFound, StewardError, ValidationFailed
from executions.forms import SchemaForm
from executions.lifecycle import ALL_STATUSES, PARKED, TERMINAL, Actor, IllegalTransition
from executions.middleware import SESSION_KEY
from executions.models import Execution, Membership, Role, role_at_least

PAGE_SIZE = 50
RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7),
          "30d": timedelta(days=30)}  # fmt: skip
RANGE_LABELS = {"": "Any time", "1h": "Last hour", "24h": "Last 24 h", "7d": "Last 7 days",
                "30d": "Last 30 days", "custom": "Custom range"}  # fmt: skip
SORTABLE = {"created_at", "duration_ms", "cost", "started_at"}
TIMELINE_LIMIT = 300


# --- plumbing --------------------------------------------------------------------------------


def page(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Login required, a workspace required, and domain errors turned into 404 / 403 pages."""

    @login_required
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if getattr(request, "membership", None) is None:
            return render(request, "no_workspace.html", status=403)
        try:
            return view(request, *args, **kwargs)
        except NotFound as exc:
            raise Http404(exc.message) from None
        except Forbidden as exc:
            raise PermissionDenied(exc.message) from None

    return wrapper


def require_role(request: HttpRequest, role: str) -> None:
    """Roles are enforced here, on the server; templates only hide what would be refused."""
    if not role_at_least(request.membership.role, role):
        raise PermissionDenied(
            f"your role ({request.membership.role}) cannot do this; it needs {role}"
        )


def actor(request: HttpRequest) -> Actor:
    return Actor.for_user(request.user)


def caps(membership: Membership | None) -> dict[str, bool]:
    role = membership.role if membership else ""
    return {
        "can_operate": role_at_least(role, Role.REVIEWER) if role else False,
        "can_admin": role == Role.ADMIN,
    }


def base_context(request: HttpRequest, nav: str, live: dict[str, Any] | None = None) -> dict:
    context: dict[str, Any] = {"nav": nav, **caps(request.membership)}
    if live is not None:
        params = {"ws": str(request.workspace.pk), **live}
        context["live_url"] = "/ws/live/?" + urlencode(params, doseq=True)
    return context


def htmx_redirect(request: HttpRequest, url: str) -> HttpResponse:
    if request.htmx:
        response = HttpResponse(status=204)
        response["HX-Redirect"] = url
        return response
    return redirect(url)


def _safe_next(request: HttpRequest, fallback: str) -> str:
    target = request.POST.get("next") or request.GET.get("next") or ""
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return target
    return fallback


def error_text(exc: Exception) -> str:
    if isinstance(exc, StewardError):
        return exc.message
    return str(exc)


# --- workspace -------------------------------------------------------------------------------


@login_required
@require_POST
def workspace_switch(request: HttpRequest) -> HttpResponse:
    wanted = request.POST.get("workspace", "")
    membership = (
        Membership.objects.filter(user=request.user, workspace_id=wanted)
        .select_related("workspace")
        .first()
        if _is_uuid(wanted)
        else None
    )
    if membership is None:
        raise PermissionDenied("you are not a member of that workspace")
    request.session[SESSION_KEY] = str(membership.workspace_id)
    messages.success(request, f"Switched to {membership.workspace.name}.")
    # Object pages of the old workspace would be a 404 in the new one: go to its list instead.
    nxt = _safe_next(request, reverse("overview"))
    for prefix in ("/executions/", "/approvals/", "/agents/"):
        if nxt.startswith(prefix) and nxt.rstrip("/") != prefix.rstrip("/"):
            nxt = prefix
    return redirect(nxt)


def _is_uuid(value: str) -> bool:
    import uuid

    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


# --- overview --------------------------------------------------------------------------------


@page
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    workspace = request.workspace
    context = base_context(request, "overview", live={"page": "overview"})
    context.update(overview_counts_context(workspace))
    context.update(overview_approvals_context(workspace))
    now = timezone.now()
    context["hourly"] = hourly_chart(selectors.execution_hourly(workspace=workspace,
                                                                since=now - timedelta(hours=24)),
                                     now=now)  # fmt: skip
    context["cost_chart"] = cost_chart(
        selectors.execution_daily_cost(workspace=workspace, since=now - timedelta(days=7)),
        now=now,
    )
    context["percentiles"] = selectors.execution_duration_percentiles(
        workspace=workspace, since=now - timedelta(days=7)
    )
    recent = selectors.execution_list(workspace=workspace, filters=selectors.ExecutionFilters())
    context["recent"] = list(recent.order_by("-id")[:8])
    context["has_agents"] = selectors.agent_list(workspace=workspace).exists()
    return render(request, "executions/overview.html", context)


def overview_counts_context(workspace: Any) -> dict[str, Any]:
    stats = selectors.execution_stats(workspace=workspace)
    day = selectors.execution_stats(workspace=workspace, since=timezone.now() - timedelta(hours=24))
    active = sum(stats["by_status"][s] for s in ("pending", "running", *PARKED))
    return {"stats": stats, "stats_24h": day, "active": active, "statuses": ALL_STATUSES}


def overview_approvals_context(workspace: Any) -> dict[str, Any]:
    from approvals import selectors as approval_selectors

    pending = approval_selectors.approval_list(workspace=workspace, status="pending")
    oldest = pending.order_by("created_at").first()
    return {
        "pending_approvals": pending.count(),
        "oldest_pending": oldest,
        "waiting_seconds": int((timezone.now() - oldest.created_at).total_seconds())
        if oldest
        else 0,
    }


def hourly_chart(rows: list[dict[str, Any]], *, now: datetime) -> dict[str, Any]:
    """Bars for the last 24 hours: stacked completed / failed-ish / other, as SVG geometry."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    buckets = {start + timedelta(hours=i): {"ok": 0, "bad": 0, "other": 0} for i in range(24)}
    for row in rows:
        hour = row["hour"]
        if hour is None:
            continue
        if timezone.is_naive(hour):
            hour = timezone.make_aware(hour, timezone.UTC)
        bucket = buckets.get(hour.replace(minute=0, second=0, microsecond=0))
        if bucket is None:
            continue
        group = (
            "ok"
            if row["status"] == "completed"
            else "bad"
            if row["status"] in {"failed", "rejected", "cancelled"}
            else "other"
        )
        bucket[group] += row["n"]
    peak = max([sum(b.values()) for b in buckets.values()] + [1])
    width, height, pad_left, pad_bottom = 720, 180, 32, 20
    slot = (width - pad_left) / 24
    bars = []
    for i, (hour, b) in enumerate(buckets.items()):
        x = pad_left + i * slot + 2
        y = height - pad_bottom
        parts = []
        for group in ("ok", "bad", "other"):
            h = (height - pad_bottom - 10) * b[group] / peak
            if h > 0:
                y -= h
                parts.append({"cls": f"bar-{group}", "y": round(y, 1), "h": round(h, 1)})
        bars.append(
            {
                "x": round(x, 1),
                "w": round(slot - 4, 1),
                "parts": parts,
                "total": sum(b.values()),
                "ok": b["ok"],
                "bad": b["bad"],
                "other": b["other"],
                "label": hour.strftime("%H:00"),
                "show_label": i % 3 == 0,
                "tx": round(x + (slot - 4) / 2, 1),
            }
        )
    return {
        "bars": bars,
        "peak": peak,
        "width": width,
        "height": height,
        "base": height - pad_bottom,
        "total": sum(bar["total"] for bar in bars),
        "grid": [
            {
                "y": round(height - pad_bottom - (height - pad_bottom - 10) * f, 1),
                "label": _tick(peak * f),
            }
            for f in (0.5, 1.0)
        ],  # fmt: skip
    }


def _tick(value: float) -> str:
    return f"{value:.0f}" if value >= 10 or value == int(value) else f"{value:.1f}"


def cost_chart(rows: list[dict[str, Any]], *, now: datetime) -> dict[str, Any]:
    """Stacked bars of cost per day for the last 7 days, one colour per agent."""
    days = [(now - timedelta(days=6 - i)).date() for i in range(7)]
    agents = sorted({row["agent__name"] for row in rows})
    series = {name: i % 7 for i, name in enumerate(agents)}
    per_day: dict[Any, dict[str, Decimal]] = {d: {} for d in days}
    for row in rows:
        day = row["day"]
        if isinstance(day, datetime):
            day = day.date()
        if day in per_day:
            per_day[day][row["agent__name"]] = row["cost"] or Decimal(0)
    peak = max([sum(v.values(), Decimal(0)) for v in per_day.values()] + [Decimal("0.000001")])
    width, height, pad_left, pad_bottom = 720, 180, 48, 20
    slot = (width - pad_left) / 7
    bars = []
    for i, day in enumerate(days):
        x = pad_left + i * slot + 10
        y = float(height - pad_bottom)
        parts = []
        for name in agents:
            cost = per_day[day].get(name)
            if not cost:
                continue
            h = float((height - pad_bottom - 10) * cost / peak)
            y -= h
            parts.append({"series": series[name], "y": round(y, 1), "h": round(max(h, 1), 1),
                          "agent": name, "cost": cost})  # fmt: skip
        bars.append(
            {
                "x": round(x, 1),
                "w": round(slot - 20, 1),
                "tx": round(x + (slot - 20) / 2, 1),
                "parts": parts,
                "label": day.strftime("%a %d"),
                "total": sum(per_day[day].values(), Decimal(0)),
            }
        )
    return {
        "bars": bars,
        "legend": [{"name": n, "series": s} for n, s in series.items()],
        "width": width,
        "height": height,
        "base": height - pad_bottom,
        "total": sum((b["total"] for b in bars), Decimal(0)),
        "peak": peak,
        "grid": [
            {
                "y": round(height - pad_bottom - (height - pad_bottom - 10) * f, 1),
                "value": peak * Decimal(str(f)),
            }
            for f in (0.5, 1.0)
        ],  # fmt: skip
    }


# --- executions list -------------------------------------------------------------------------


def list_params(request_get: QueryDict) -> tuple[QueryDict, dict[str, Any]]:
    """The list's URL parameters turned into selector filters: `range=24h` becomes a moving
    created_after, so a bookmarked "last 24 h" view stays the last 24 hours."""
    params = request_get.copy()
    state: dict[str, Any] = {"range": params.get("range", "")}
    if state["range"] in RANGES:
        params["created_after"] = (timezone.now() - RANGES[state["range"]]).isoformat()
        params.pop("created_before", None)
    for key in ("created_after", "created_before"):
        # datetime-local inputs send "2025-01-02T10:00"; the selector reads ISO-8601.
        if params.get(key) and len(params[key]) == 16 and state["range"] not in RANGES:
            params[key] = params[key] + ":00"
    metadata = [m for m in params.getlist("metadata") if m.strip()]
    params.setlist("metadata", metadata)
    return params, state


def _list_query(request: HttpRequest) -> str:
    params = request.GET.copy()
    for key in ("cursor", "fragment", "since"):
        params.pop(key, None)
    for key in list(params):
        if all(v == "" for v in params.getlist(key)):
            params.pop(key)
    return params.urlencode()


@page
@require_GET
def execution_list(request: HttpRequest) -> HttpResponse:
    workspace = request.workspace
    errors: list[dict[str, str]] = []
    params, state = list_params(request.GET)
    try:
        filters = selectors.ExecutionFilters.from_params(params)
    except ValidationFailed as exc:
        errors = exc.details or []
        filters = selectors.ExecutionFilters()
    ordering = request.GET.get("ordering") or "-created_at"
    if ordering.lstrip("-") not in SORTABLE:
        ordering = "-created_at"
    cursor = request.GET.get("cursor") or None
    qs = selectors.execution_list(workspace=workspace, filters=filters)
    try:
        result = selectors.execution_page_ordered(
            qs, ordering=ordering, cursor=cursor, limit=PAGE_SIZE
        )
    except StewardError as exc:
        errors.append({"field": "cursor", "message": exc.message})
        result = selectors.execution_page_ordered(qs, ordering=ordering, cursor=None, limit=50)
        cursor = None
    query = _list_query(request)
    more_url = None
    if result.next_cursor:
        more_params = request.GET.copy()
        more_params["cursor"] = result.next_cursor
        more_url = f"{reverse('execution_list')}?{more_params.urlencode()}"
    context = {
        "page": result,
        "more_url": more_url,
        "ordering": ordering,
    }
    if request.htmx and request.GET.get("fragment") == "rows":
        return render(request, "executions/list.html#rows", context)
    live_insert = ordering == "-created_at" and not cursor
    live = {"page": "executions", "since": timezone.now().isoformat(),
            "insert": "1" if live_insert else "0"}  # fmt: skip
    for key in ("status", "agent_id", "metadata", "q", "cost_above", "session_id"):
        if values := params.getlist(key):
            live[key] = values
    for key in ("created_after", "created_before"):
        if params.get(key) and state["range"] not in RANGES:
            live[key] = params[key]
    if state["range"] in RANGES:
        live["range"] = state["range"]
    context.update(base_context(request, "executions", live=live))
    context.update(
        {
            "filters": filters,
            "errors": errors,
            "state": state,
            "query": query,
            "statuses": ALL_STATUSES,
            "selected_status": set(filters.status or []),
            "agents": selectors.agent_list(workspace=workspace),
            "ranges": RANGE_LABELS,
            "saved_views": selectors.savedview_list(workspace=workspace),
            "is_filtered": bool(query.replace("ordering=", "").strip("&")) and query != "",
            "metadata_text": " ".join(params.getlist("metadata")),
            "has_any": cursor is not None
            or bool(result.items)
            or Execution.objects.for_workspace(workspace).exists(),
        }
    )
    return render(request, "executions/list.html", context)


@page
@require_GET
def execution_list_changes(request: HttpRequest) -> HttpResponse:
    """After a websocket reconnect: out-of-band rows for what changed while the page was away
    (rows it shows are replaced in place; new matching ones go on top)."""
    since = _parse_since(request.GET.get("since"))
    params, _ = list_params(request.GET)
    try:
        filters = selectors.ExecutionFilters.from_params(params)
    except ValidationFailed:
        filters = selectors.ExecutionFilters()
    insert = request.GET.get("insert") == "1"
    changed = list(
        Execution.objects.for_workspace(request.workspace)
        .filter(updated_at__gte=since)
        .select_related("agent", "agent_version")
        .order_by("-id")[:200]
    )
    parts = []
    for execution in reversed(changed):
        matches = selectors.execution_matches(execution=execution, filters=filters)
        upsert = insert and matches and execution.created_at >= since
        parts.append(row_html(execution, upsert=upsert))
    return HttpResponse("".join(parts))


def _parse_since(value: str | None) -> datetime:
    from django.utils.dateparse import parse_datetime

    parsed = parse_datetime((value or "").replace(" ", "+")) if value else None
    if parsed is None:
        return timezone.now() - timedelta(minutes=5)
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, timezone.UTC)
    return parsed


def row_html(execution: Execution, *, upsert: bool) -> str:
    """One list row as an out-of-band fragment: replace the row in place, or (upsert) put it
    on top of the list when the page does not show it yet (static/js dedupes)."""
    row = render_to_string("executions/list.html#row", {"e": execution, "oob": not upsert})
    if upsert:
        return f'<tbody hx-swap-oob="afterbegin:#exec-rows">{row}</tbody>'
    return row


@page
@require_POST
def savedview_create(request: HttpRequest) -> HttpResponse:
    query = request.POST.get("query", "")
    try:
        view = services.savedview_create(
            workspace=request.workspace,
            name=request.POST.get("name", ""),
            query=query,
            created_by=request.user,
        )
    except ValidationFailed as exc:
        messages.error(request, f"Could not save the view: {exc.details[0]['message']}")
        return redirect(f"{reverse('execution_list')}?{query}")
    messages.success(request, f"Saved view “{view.name}” is shared with the workspace.")
    return redirect(f"{reverse('execution_list')}?{view.query}")


@page
@require_POST
def savedview_delete(request: HttpRequest, view_id: str) -> HttpResponse:
    view = selectors.savedview_list(workspace=request.workspace).filter(pk=view_id).first()
    if view is None:
        raise Http404("saved view not found")
    if view.created_by_id != request.user.pk:
        require_role(request, Role.ADMIN)
    services.savedview_delete(workspace=request.workspace, view_id=view.pk)
    messages.success(request, f"Deleted saved view “{view.name}”.")
    return redirect(reverse("execution_list"))


# --- execution detail ------------------------------------------------------------------------

STEP_CLASS = {
    "prompt": "llm",
    "llm": "llm",
    "model": "llm",
    "agent": "llm",
    "tool": "tool",
    "tool_call": "tool",
    "approval": "approval",
    "wait_for_input": "input",
    "error": "error",
}


def step_class(kind: str, step_type: str = "") -> str:
    if step_type in {"error"}:
        return "error"
    return STEP_CLASS.get(kind or "", "step")


def waterfall(execution: Execution, steps: list) -> dict[str, Any]:
    """Start offset and width (percent of the run) of every timed step."""
    timed = [s for s in steps if s.started_at and s.ended_at]
    begin = execution.started_at or execution.created_at
    if timed:
        begin = min([begin, *[s.started_at for s in timed]])
    if execution.completed_at:
        end = execution.completed_at
    elif execution.status in {"running", "pending"}:
        end = timezone.now()
    else:
        # Parked: the axis ends at the last thing that happened, not at "now".
        end = max([begin, *[s.created_at for s in steps], *[s.ended_at for s in timed]])
    if timed:
        end = max([end, *[s.ended_at for s in timed]])
    span = max((end - begin).total_seconds() * 1000, 1.0)
    rows = []
    for step in timed:
        offset = (step.started_at - begin).total_seconds() * 1000
        length = max((step.ended_at - step.started_at).total_seconds() * 1000, 0)
        usage = step.usage or {}
        rows.append(
            {
                "step": step,
                "cls": step_class(step.step_kind, step.type),
                "left": round(100 * offset / span, 2),
                "width": round(max(100 * length / span, 0.4), 2),
                "ms": int(length),
                "offset_ms": int(offset),
                "tokens": usage.get("total_tokens")
                or (usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
                or None,
                "cost": step.cost,
            }
        )
    ticks = [int(span * f) for f in (0, 0.25, 0.5, 0.75, 1)]
    return {"rows": rows, "span_ms": int(span), "ticks": ticks}


def detail_context(
    execution: Execution, *, membership: Membership, user: Any, with_events: bool = True
) -> dict[str, Any]:
    """Everything the detail page and its live fragments render (live updates skip the
    streamed events: those arrive as their own messages)."""
    steps, earlier = selectors.transition_recent(execution=execution, limit=TIMELINE_LIMIT)
    waiting = (execution.state or {}).get("waiting") or {}
    context: dict[str, Any] = {
        "e": execution,
        "steps": steps,
        "earlier": earlier,
        "waterfall": waterfall(execution, steps),
        "children": list(
            execution.children.select_related("agent", "agent_version").order_by("id")[:50]
        ),
        "parent": execution.parent,
        "events": selectors.execution_event_list(execution=execution) if with_events else [],
        "is_terminal": execution.status in TERMINAL,
        "waiting": waiting,
        "membership": membership,
        "role": membership.role,
        "user": user,
        **caps(membership),
    }
    if execution.status == "awaiting_input" and context["can_operate"]:
        context["resume_form"] = SchemaForm(schema=waiting.get("schema"), prefix="resume")
    context.update(approval_panel_context(execution, membership=membership, user=user))
    return context


def approval_panel_context(execution: Execution, *, membership: Membership, user: Any) -> dict:
    from approvals import views as approval_views

    approval = execution.approvals.order_by("-created_at").first()
    if approval is None:
        return {"approval": None}
    return {"approval": approval, **approval_views.panel_context(approval, membership, user)}


@page
@require_GET
def execution_detail(request: HttpRequest, execution_id: str) -> HttpResponse:
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    context = detail_context(execution, membership=request.membership, user=request.user)
    if request.GET.get("all") == "1":
        context["steps"] = list(selectors.transition_list(execution=execution))
        context["earlier"] = 0
    fragment = request.GET.get("fragment")
    if request.htmx and fragment == "live":
        # After a reconnect: every live part of the page, swapped out of band.
        return HttpResponse(detail_fragments(context, with_timeline=True))
    context.update(base_context(request, "executions",
                                live={"page": "execution", "id": str(execution.pk)}))  # fmt: skip
    return render(request, "executions/detail.html", context)


def detail_fragments(context: dict[str, Any], *, with_timeline: bool = False) -> str:
    """The parts of the detail page that change as the execution moves, out of band."""
    parts = [
        render_to_string("executions/detail.html#header", {**context, "oob": True}),
        render_to_string("executions/detail.html#facts", {**context, "oob": True}),
        render_to_string("executions/detail.html#timeline_count", {**context, "oob": True}),
        render_to_string("executions/detail.html#waterfall", {**context, "oob": True}),
        render_to_string("executions/detail.html#data", {**context, "oob": True}),
        render_to_string("approvals/_panel.html#panel", {**context, "oob": True}),
    ]
    if with_timeline:
        parts.append(render_to_string("executions/detail.html#timeline", {**context, "oob": True}))
        parts.append(render_to_string("executions/detail.html#stream", {**context, "oob": True}))
    return "".join(parts)


def _operate(request: HttpRequest, execution_id: str, action: Callable[[Execution], Any]):
    require_role(request, Role.REVIEWER)
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    try:
        result = action(execution)
    except (IllegalTransition, Conflict) as exc:
        messages.error(request, error_text(exc))
        return htmx_redirect(request, reverse("execution_detail", args=[execution.pk]))
    return result


@page
@require_POST
def execution_cancel(request: HttpRequest, execution_id: str) -> HttpResponse:
    def cancel(execution: Execution) -> HttpResponse:
        services.execution_cancel(
            execution=execution, actor=actor(request), reason=request.POST.get("reason", "")
        )
        messages.success(request, "Execution cancelled.")
        return htmx_redirect(request, reverse("execution_detail", args=[execution.pk]))

    return _operate(request, execution_id, cancel)


@page
@require_POST
def execution_retry(request: HttpRequest, execution_id: str) -> HttpResponse:
    def retry(execution: Execution) -> HttpResponse:
        retried = services.execution_retry(execution=execution, actor=actor(request))
        messages.success(request, "Started a new run with the same input and version.")
        return htmx_redirect(request, reverse("execution_detail", args=[retried.pk]))

    return _operate(request, execution_id, retry)


@page
@require_POST
def execution_resume(request: HttpRequest, execution_id: str) -> HttpResponse:
    require_role(request, Role.REVIEWER)
    execution = selectors.execution_get(workspace=request.workspace, execution_id=execution_id)
    waiting = (execution.state or {}).get("waiting") or {}
    form = SchemaForm(request.POST, schema=waiting.get("schema"), prefix="resume")
    if form.is_valid():
        try:
            services.execution_resume(execution=execution, input=form.value(), actor=actor(request))
        except ValidationFailed as exc:
            for problem in exc.details or []:
                form.add_schema_error(problem["field"], problem["message"])
        except (IllegalTransition, Conflict) as exc:
            messages.error(request, error_text(exc))
            return htmx_redirect(request, reverse("execution_detail", args=[execution.pk]))
        else:
            messages.success(request, "Input sent; the execution is running again.")
            return htmx_redirect(request, reverse("execution_detail", args=[execution.pk]))
    context = detail_context(execution, membership=request.membership, user=request.user)
    context["resume_form"] = form
    return render(request, "executions/detail.html#resume", context, status=422)


# --- agents ----------------------------------------------------------------------------------


@page
@require_GET
def agent_list(request: HttpRequest) -> HttpResponse:
    workspace = request.workspace
    agents = list(selectors.agent_list(workspace=workspace))
    since = timezone.now() - timedelta(hours=24)
    runs = selectors.agent_run_stats(workspace=workspace, since=since)
    context = base_context(request, "agents")
    context.update({"agents": agents, "runs": runs})
    return render(request, "agents/list.html", context)


def _definition_text(version: Any) -> str:
    return yaml.safe_dump(version.config or {}, sort_keys=False, allow_unicode=True, width=100)


@page
def agent_detail(request: HttpRequest, agent_id: str) -> HttpResponse:
    agent = selectors.agent_get(workspace=request.workspace, agent_id=agent_id)
    versions = list(agent.versions.select_related("created_by").order_by("-number"))
    chosen = agent.current_version
    if request.GET.get("version"):
        chosen = selectors.agent_version_get(agent=agent, version_id=request.GET["version"])
    schema = chosen.input_schema if chosen else _python_schema(agent)
    form = SchemaForm(schema=schema, prefix="run")
    status = 200
    if request.method == "POST":
        require_role(request, Role.REVIEWER)
        form = SchemaForm(request.POST, schema=schema, prefix="run")
        if form.is_valid():
            try:
                execution, _ = services.execution_start(
                    workspace=request.workspace,
                    agent=agent,
                    input=form.value(),
                    version=chosen,
                    session_id=request.POST.get("session_id") or None,
                    metadata={"source": "dashboard"},
                    actor=actor(request),
                )
            except ValidationFailed as exc:
                for problem in exc.details or []:
                    form.add_schema_error(problem["field"], problem["message"])
            else:
                return htmx_redirect(request, reverse("execution_detail", args=[execution.pk]))
        status = 422
    recent = selectors.execution_list(
        workspace=request.workspace,
        filters=selectors.ExecutionFilters(agent_id=str(agent.pk)),
    ).order_by("-id")[:10]
    context = base_context(request, "agents")
    context.update(
        {
            "agent": agent,
            "versions": versions,
            "chosen": chosen,
            "definition": _definition_text(chosen) if chosen else "",
            "form": form,
            "recent": list(recent),
        }
    )
    if request.htmx and request.method == "POST":
        return render(request, "agents/detail.html#run_form", context, status=status)
    return render(request, "agents/detail.html", context, status=status)


def _python_schema(agent: Any) -> dict | None:
    from executions.engine import python_agents

    registered = python_agents.get(agent.name)
    return registered.input_schema if registered else None


# --- settings (admins) -----------------------------------------------------------------------


def _settings(request: HttpRequest, tab: str, **extra: Any) -> dict[str, Any]:
    require_role(request, Role.ADMIN)
    context = base_context(request, "settings")
    context.update({"tab": tab, **extra})
    return context


@page
def settings_keys(request: HttpRequest) -> HttpResponse:
    context = _settings(request, "keys", roles=Role.choices)
    status = 200
    if request.method == "POST":
        action = request.POST.get("action")
        try:
            if action == "create":
                key, raw = services.apikey_create(
                    workspace=request.workspace,
                    name=request.POST.get("name", ""),
                    role=request.POST.get("role", Role.VIEWER),
                    created_by=request.user,
                )
                context["created_key"] = key
                context["created_secret"] = raw
            elif action == "revoke":
                key = services.apikey_revoke(
                    workspace=request.workspace, prefix=request.POST.get("prefix", "")
                )
                messages.success(request, f"Revoked {key.name} ({key.prefix}…).")
                return redirect("settings_keys")
        except (ValidationFailed, NotFound) as exc:
            context["form_error"] = error_text(exc)
            status = 422
    context["keys"] = selectors.apikey_list(workspace=request.workspace).select_related(
        "created_by"
    )
    return render(request, "settings/keys.html", context, status=status)


@page
def settings_members(request: HttpRequest) -> HttpResponse:
    context = _settings(request, "members", roles=Role.choices)
    status = 200
    if request.method == "POST":
        action = request.POST.get("action")
        User = get_user_model()
        try:
            if action == "add":
                membership = services.member_add(
                    workspace=request.workspace,
                    username=request.POST.get("username", ""),
                    role=request.POST.get("role", Role.VIEWER),
                    password=request.POST.get("password", ""),
                    email=request.POST.get("email", ""),
                )
                messages.success(request, f"Added {membership.user.get_username()}.")
                return redirect("settings_members")
            user = User.objects.filter(pk=request.POST.get("user_id")).first()
            if user is None:
                raise NotFound("no such member")
            if action == "role":
                services.membership_change_role(
                    workspace=request.workspace, user=user, role=request.POST.get("role", "")
                )
                messages.success(request, f"{user.get_username()} is now {request.POST['role']}.")
            elif action == "remove":
                services.membership_remove(workspace=request.workspace, user=user)
                messages.success(request, f"Removed {user.get_username()} from the workspace.")
            return redirect("settings_members")
        except (ValidationFailed, NotFound, Conflict) as exc:
            context["form_error"] = error_text(exc)
            context["form_data"] = request.POST
            status = 422
    context["members"] = selectors.membership_list(workspace=request.workspace)
    return render(request, "settings/members.html", context, status=status)


@page
def settings_retention(request: HttpRequest) -> HttpResponse:
    context = _settings(request, "retention")
    status = 200
    if request.method == "POST":
        try:
            services.workspace_set_retention(
                workspace=request.workspace, days=request.POST.get("retention_days")
            )
            messages.success(
                request, f"Executions are now kept {request.workspace.retention_days} days."
            )
            return redirect("settings_retention")
        except ValidationFailed as exc:
            context["form_error"] = error_text(exc)
            status = 422
    context["workspace"] = request.workspace
    return render(request, "settings/retention.html", context, status=status)
