"""Page contexts and the fragments built from them, shared by the pages and the live consumer.

Fragments the live consumer (`executions.live`) pushes come from the same templates as the
pages, as named partials (`executions/list.html#row`…), rendered from the contexts built here,
so a pushed fragment is exactly what a reload shows. The approval panels' contexts live in
`approval_contexts` and are re-exported here: the live consumer imports this one module.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Count, Subquery
from django.http import QueryDict
from django.template.loader import render_to_string
from django.utils import timezone

from approvals import selectors as approval_selectors
from executions import selectors
from executions.forms import SchemaForm
from executions.lifecycle import ALL_STATUSES, PARKED, TERMINAL
from executions.models import Execution, Membership
from executions.pages.approval_contexts import (
    approval_detail_context,
    can_decide,
    in_tab,
    inbox_counts,
    item_context,
    panel_context,
)
from executions.pages.base import caps
from executions.pages.timing import attach_times, step_class, waterfall

__all__ = [
    "RANGES",
    "RANGE_LABELS",
    "approval_detail_context",
    "approval_panel_context",
    "can_decide",
    "detail_context",
    "detail_fragments",
    "in_tab",
    "inbox_counts",
    "item_context",
    "list_params",
    "overview_approvals_context",
    "overview_counts_context",
    "panel_context",
    "row_html",
    "step_class",
    "waterfall",
]

RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7),
          "30d": timedelta(days=30)}  # fmt: skip
RANGE_LABELS = {"": "Any time", "1h": "Last hour", "24h": "Last 24 h", "7d": "Last 7 days",
                "30d": "Last 30 days", "custom": "Custom range"}  # fmt: skip
TIMELINE_LIMIT = 50  # the latest entries; older ones load on demand (issue 12)


# --- overview --------------------------------------------------------------------------------


def overview_counts_context(
    workspace: Any, *, stats: dict[str, Any] | None = None, day: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The counts cards; `stats` and `day` are all time's and the last 24 h's execution_stats
    when the caller has them (the overview page reads them with its charts)."""
    if stats is None:
        stats = selectors.execution_stats(workspace=workspace)
    if day is None:
        since = timezone.now() - timedelta(hours=24)
        day = selectors.execution_stats(workspace=workspace, since=since)
    active = sum(stats["by_status"][s] for s in ("pending", "running", *PARKED))
    return {"stats": stats, "stats_24h": day, "active": active, "statuses": ALL_STATUSES}


CARD_FIELDS = ("id", "title", "created_at", "execution_id", "execution__id", "execution__agent_id",
               "execution__agent__id", "execution__agent__name")  # fmt: skip


def overview_approvals_context(workspace: Any) -> dict[str, Any]:
    pending = approval_selectors.approval_list(workspace=workspace, status="pending")
    # The card shows the oldest one's title and agent: not its assignees or decisions, which
    # approval_list prefetches for the inbox (two queries the overview does not need). The
    # count rides along as a scalar subquery: one statement for the card.
    count = pending.order_by().values("workspace").annotate(n=Count("id")).values("n")
    # Only what the card shows: not the approval's payload and schema, nor the run's documents
    # (select_related read whole approval, execution and agent rows for one title).
    oldest = (
        pending.prefetch_related(None)
        .only(*CARD_FIELDS)
        .annotate(pending_total=Subquery(count))
        .order_by("created_at")
        .first()
    )
    return {
        "pending_approvals": oldest.pending_total if oldest else 0,
        "oldest_pending": oldest,
        "waiting_seconds": int((timezone.now() - oldest.created_at).total_seconds())
        if oldest
        else 0,
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


def row_html(execution: Execution, *, upsert: bool) -> str:
    """One list row as an out-of-band fragment: replace the row in place, or (upsert) put it
    on top of the list when the page does not show it yet (static/js dedupes)."""
    if not hasattr(execution, "times"):
        attach_times([execution])
    row = render_to_string("executions/list.html#row", {"e": execution, "oob": not upsert})
    if upsert:
        return f'<tbody hx-swap-oob="afterbegin:#exec-rows">{row}</tbody>'
    return row


# --- execution detail ------------------------------------------------------------------------


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
        "times": attach_times([execution])[0].times,
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
    """The decision panel of the execution's latest approval, as the detail page shows it."""
    approval = execution.approvals.order_by("-created_at").first()
    if approval is None:
        return {"approval": None}
    return {"approval": approval, **panel_context(approval, membership, user)}


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
