"""The executions list: filters, sorting, cursor pages, saved views, and the catch-up fragment
a page fetches after its websocket reconnects."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.contrib import messages
from django.db.models.signals import post_delete, post_save
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from django.views.decorators.http import require_GET, require_POST

from executions import selectors, services
from executions.errors import StewardError, ValidationFailed
from executions.lifecycle import ALL_STATUSES
from executions.models import Agent, Execution, Role
from executions.pages.base import base_context, page, require_role
from executions.pages.contexts import RANGE_LABELS, RANGES, list_params, row_html
from executions.pages.forms import SavedViewForm
from executions.pages.timing import attach_times

PAGE_SIZE = 50
SORTABLE = {"created_at", "duration_ms", "cost", "started_at"}


def _list_query(request: HttpRequest) -> str:
    params = request.GET.copy()
    for key in ("cursor", "fragment", "since"):
        params.pop(key, None)
    for key in list(params):
        if all(v == "" for v in params.getlist(key)):
            params.pop(key)
    return params.urlencode()


# The columns a row shows (executions/list.html#row, attach_times) and the orderings' cursor
# values: not the run's documents, its lease or its idempotency key, and of its agent and
# version only the name and the label (their configs, schemas and metadata are JSON, decoded
# 50 times a page otherwise).
ROW_FIELDS = ("id", "agent_id", "agent_version_id", "parent_id", "session_id", "status",
              "token_usage", "cost", "duration_ms", "created_at", "started_at", "completed_at",
              "updated_at")  # fmt: skip
RELATED_FIELDS = ("agent__id", "agent__name", "agent_version__id", "agent_version__version")

# The agent filter's options per workspace, kept by this process for a few seconds: they change
# when an agent is created, renamed or deleted, not from one page to the next (a query on every
# list page otherwise). A change made in this process drops them at once; another process's
# change shows here within AGENT_MENU_SECONDS.
AGENT_MENU_SECONDS = 10.0
_agent_menus: dict[Any, tuple[float, list[tuple[str, str]]]] = {}


def agent_menu(workspace: Any) -> list[tuple[str, str]]:
    """(id, name) of the workspace's agents, by name."""
    now = time.monotonic()
    kept = _agent_menus.get(workspace.pk)
    if kept is not None and kept[0] > now:
        return kept[1]
    # Names only, not each agent's current version.
    rows = selectors.agent_list(workspace=workspace).select_related(None).values_list("id", "name")
    menu = [(str(pk), name) for pk, name in rows]
    _agent_menus[workspace.pk] = (now + AGENT_MENU_SECONDS, menu)
    return menu


def _forget_agent_menu(sender: Any, instance: Agent, **kwargs: Any) -> None:
    _agent_menus.pop(instance.workspace_id, None)


post_save.connect(_forget_agent_menu, sender=Agent, dispatch_uid="steward.agent_menu.save")
post_delete.connect(_forget_agent_menu, sender=Agent, dispatch_uid="steward.agent_menu.delete")


def _rows_only(qs: Any) -> Any:
    """The list's columns only; its agent and version joined (select_related) are narrowed
    too, prefetched ones (a metadata filter) are read whole (a dozen rows)."""
    if qs.query.select_related:
        return qs.only(*ROW_FIELDS, *RELATED_FIELDS)
    return qs.only(*ROW_FIELDS)


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
    qs = _rows_only(selectors.execution_list(workspace=workspace, filters=filters))
    counted = cursor is None and request.GET.get("fragment") != "rows"
    # The first page says how many runs match: exact up to COUNT_CAP, then "10,000+"; a
    # metadata filter's matches are read once for both.
    result = None
    if counted:
        result = selectors.execution_first_page_counted(qs, ordering=ordering, limit=PAGE_SIZE)
    if result is None:
        try:
            result = selectors.execution_page_ordered(
                qs, ordering=ordering, cursor=cursor, limit=PAGE_SIZE
            )
        except StewardError as exc:
            errors.append({"field": "cursor", "message": exc.message})
            result = selectors.execution_page_ordered(
                qs, ordering=ordering, cursor=None, limit=PAGE_SIZE
            )
            cursor = None
            counted = request.GET.get("fragment") != "rows"
        if counted:
            result.total, result.exact = selectors.count_capped(qs)
    attach_times(result.items)  # one meaning of a run's time: running, waits apart
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
            "agents": agent_menu(workspace),
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
    """After a websocket reconnect: out-of-band rows for what changed while the page was away.
    Rows it shows (`shown`, sent by static/js) are replaced in place and new ones its filters
    take go on top; nothing is sent for any other row (an out-of-band row with no target on
    the page is an htmx error). Without `shown`, every other changed row is sent in place."""
    since = _parse_since(request.GET.get("since"))
    shown = _shown(request.GET.get("shown"))
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
        if shown is not None and str(execution.pk) in shown:
            parts.append(row_html(execution, upsert=False))
        elif (
            insert
            and execution.created_at >= since
            and selectors.execution_matches(execution=execution, filters=filters)
        ):
            parts.append(row_html(execution, upsert=True))
        elif shown is None:
            parts.append(row_html(execution, upsert=False))
    return HttpResponse("".join(parts))


def _shown(value: str | None) -> set[str] | None:
    """The row ids a page shows (comma-separated uuids); None when the page did not say."""
    if value is None:
        return None
    found = set()
    for part in value.split(","):
        try:
            found.add(str(uuid.UUID(part.strip()[-36:])))
        except ValueError:
            continue
    return found


def _parse_since(value: str | None) -> datetime:
    parsed = parse_datetime((value or "").replace(" ", "+")) if value else None
    if parsed is None:
        return timezone.now() - timedelta(minutes=5)
    if timezone.is_naive(parsed):
        parsed = timezone.make_aware(parsed, timezone.UTC)
    return parsed


@page
@require_POST
def savedview_create(request: HttpRequest) -> HttpResponse:
    form = SavedViewForm(request.POST)
    form.is_valid()  # both fields are optional text: the service names what is wrong
    query = form.cleaned_data.get("query", "")
    try:
        view = services.savedview_create(
            workspace=request.workspace,
            name=form.cleaned_data.get("name", ""),
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
