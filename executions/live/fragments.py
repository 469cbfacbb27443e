"""The HTML fragments the live sockets push, rendered from the pages' own template partials
and contexts (`executions.pages.contexts`), so a pushed fragment is what a reload shows.

Each function here runs on the live threads (fanout.in_thread) and reads the database; the
consumer shares one call per change among the sockets it concerns (fanout.shared).

The execution page keeps a position: the last streamed event id and the last transition seq
it shows. `detail_since` renders everything after a position (a page that connects or
reconnects), `detail_change` one change; the consumer puts them together so that every event
and timeline entry reaches the page exactly once, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.template.loader import render_to_string

from approvals.models import Approval
from executions import selectors
from executions.models import Execution, ExecutionEvent, Membership, Transition
from executions.pages.contexts import (
    approval_detail_context,
    approval_panel_context,
    detail_context,
    detail_fragments,
    in_tab,
    inbox_counts,
    item_context,
    overview_approvals_context,
    overview_counts_context,
)

# A page that was away longer than this many events reloads its stream instead (the page
# renders the last 1,000 events too).
REPLAY_LIMIT = 1000


@dataclass(frozen=True)
class Viewer:
    """Who looks, for fragments that differ per person (who may decide, which tab holds what)."""

    membership: Membership
    user: Any

    @property
    def workspace(self) -> Any:
        return self.membership.workspace


# --- the execution page ------------------------------------------------------------------------


@dataclass(frozen=True)
class DetailChange:
    """One transition as the execution page shows it: the parts that show the current state
    (header, facts, steps…), and the timeline entry, placed by the consumer only after the
    entries before it."""

    state: str
    seq: int | None
    item: str


def _execution(viewer: Viewer, execution_id: Any) -> Execution:
    return selectors.execution_get(workspace=viewer.workspace, execution_id=execution_id)


def timeline_items(context: dict[str, Any], steps: list[Transition]) -> str:
    if not steps:
        return ""
    items = "".join(
        render_to_string(
            "executions/detail.html#timeline_item", {**context, "t": step, "new": True}
        )
        for step in steps
    )
    return f'<ol hx-swap-oob="beforeend:#exec-timeline">{items}</ol>'


def stream_spans(events: list[Any]) -> str:
    spans = "".join(
        render_to_string("executions/_event.html", {"ev": event}).strip() for event in events
    )
    return f'<div hx-swap-oob="beforeend:#exec-stream">{spans}</div>' if spans else ""


def detail_change(viewer: Viewer, execution_id: Any, transition_id: Any) -> DetailChange:
    execution = _execution(viewer, execution_id)
    context = detail_context(
        execution, membership=viewer.membership, user=viewer.user, with_events=False
    )
    step = (
        Transition.objects.filter(pk=transition_id, execution_id=execution.pk).first()
        if transition_id is not None
        else None
    )
    return DetailChange(
        state=detail_fragments(context),
        seq=step.seq if step is not None else None,
        item=timeline_items(context, [step]) if step is not None else "",
    )


@dataclass(frozen=True)
class Since:
    html: str
    last_event: int  # unchanged (or 0) when no events were asked for
    last_seq: int


def detail_since(
    viewer: Viewer,
    execution_id: Any,
    *,
    after_event: int | None,
    after_seq: int,
    upto_seq: int | None,
) -> Since:
    """The page's current state, then every timeline entry after `after_seq` (up to
    `upto_seq` when given) and every streamed event after `after_event` (none when None), in
    order."""
    execution = _execution(viewer, execution_id)
    context = detail_context(
        execution, membership=viewer.membership, user=viewer.user, with_events=False
    )
    steps = Transition.objects.filter(execution_id=execution.pk, seq__gt=after_seq)
    if upto_seq is not None:
        steps = steps.filter(seq__lte=upto_seq)
    steps = list(steps.order_by("seq")[:REPLAY_LIMIT])
    events = []
    if after_event is not None:
        later = ExecutionEvent.objects.filter(execution_id=execution.pk, id__gt=after_event)
        events = list(later.order_by("id")[:REPLAY_LIMIT])
    return Since(
        html=detail_fragments(context) + timeline_items(context, steps) + stream_spans(events),
        last_event=events[-1].id if events else (after_event or 0),
        last_seq=steps[-1].seq if steps else after_seq,
    )


class StreamedEvent:
    """A streamed event as the `_event.html` partial reads it, built from the live message."""

    def __init__(self, message: dict[str, Any]) -> None:
        self.id = message.get("event_id")
        self.type = message.get("event")
        self.data = message.get("data") or {}


def stream_html(message: dict[str, Any]) -> str:
    return stream_spans([StreamedEvent(message)])


# --- the overview --------------------------------------------------------------------------------


def overview_counts(workspace: Any) -> str:
    context = {**overview_counts_context(workspace), "oob": True}
    return render_to_string("executions/overview.html#counts", context)


# --- the approval page: its execution's card and recent steps -------------------------------


def approval_execution(viewer: Viewer, approval_id: Any) -> str:
    approval = _approval(viewer, approval_id)
    if approval is None or approval.execution_id is None:
        return ""
    context = {**approval_detail_context(approval, viewer.membership, viewer.user), "oob": True}
    return render_to_string("approvals/detail.html#execution_cards", context)


# --- approval changes ------------------------------------------------------------------------


def _approval(viewer: Viewer, approval_id: Any) -> Approval | None:
    return (
        Approval.objects.select_related("execution__agent", "workspace")
        .prefetch_related("assignee_users", "decisions")
        .filter(pk=approval_id, workspace_id=viewer.membership.workspace_id)
        .first()
    )


@dataclass(frozen=True)
class InboxChange:
    """An approval change as one viewer's inbox tab sees it."""

    approval_id: str
    in_place: str  # the item, replacing itself where the page shows it
    insert: str  # the item, at the end of a tab that now holds it (oldest first)
    tabs: str  # the tab counts


def inbox_change(viewer: Viewer, approval_id: Any, tab: str) -> InboxChange | None:
    approval = _approval(viewer, approval_id)
    if approval is None:
        return None
    context = item_context(approval, viewer.membership, viewer.user)
    in_place = render_to_string("approvals/inbox.html#item", {**context, "oob": True})
    insert = ""
    if approval.status == "pending" and in_tab(approval, tab, viewer.membership, viewer.user):
        item = render_to_string("approvals/inbox.html#item", {**context, "oob": False})
        insert = f'<ul hx-swap-oob="beforeend:#inbox-items">{item}</ul>'
    return InboxChange(str(approval.pk), in_place, insert, inbox_tabs(viewer, tab))


def inbox_tabs(viewer: Viewer, tab: str) -> str:
    """The pending counts of the inbox tabs, as the page's tab bar shows them."""
    counts = inbox_counts(viewer.workspace, viewer.membership, viewer.user)
    return "".join(
        render_to_string(
            "approvals/inbox.html#tab_count", {"key": key, "n": n, "label": label, "oob": True}
        )
        for key, (n, label) in counts.items()
    )


def approval_for_page(viewer: Viewer, page: str, object_id: Any, approval_id: Any) -> str:
    """The approval part of the approval page, the execution page or the overview."""
    approval = _approval(viewer, approval_id)
    if approval is None:
        return ""
    if page == "approval" and str(approval.pk) == object_id:
        context = approval_detail_context(approval, viewer.membership, viewer.user)
        context.update({"oob": True, "context_page": "approval"})
        return render_to_string("approvals/_panel.html#panel", context)
    if page == "execution" and str(approval.execution_id) == object_id:
        execution = Execution.objects.select_related("agent").get(
            pk=object_id, workspace_id=viewer.membership.workspace_id
        )
        context = approval_panel_context(execution, membership=viewer.membership, user=viewer.user)
        context["oob"] = True
        return render_to_string("approvals/_panel.html#panel", context)
    if page == "overview":
        context = {**overview_approvals_context(viewer.workspace), "oob": True}
        return render_to_string("executions/overview.html#approvals_card", context)
    return ""
