"""The live socket of a dashboard page: one per page, HTML fragments out, nothing in.

A page connects to `/ws/live/?page=<kind>&ws=<workspace id>&…`. The consumer checks the session
user (the origin is checked in config/asgi.py), that the user belongs to the workspace, and for
an execution or approval page that the object is in it; then it joins only the groups that
page needs. Group messages carry ids (executions.live.events); each is turned here into the HTML
fragments of that page, rendered from the page's own template partials, marked
`hx-swap-oob` so the htmx ws extension swaps them in place.

Rendering is per page kind, not per message type: the list renders a row, the detail page
its header, timeline entry and waterfall, the inbox an item for this user (who may decide
differs per person). Each change is loaded and rendered once per process and shared by the
sockets it concerns (executions.live.fanout): a list row by every list page of the workspace, which
then only decides in memory whether its filters take the row in; a decision panel or an inbox
item by the sockets of the same user and role.
"""

from __future__ import annotations

import logging
import time
import uuid
from functools import partial
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.http import QueryDict
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from approvals.models import Approval
from executions import selectors
from executions.live import events, fanout
from executions.models import Execution, Membership, Transition
from executions.pages.contexts import (
    approval_detail_context,
    approval_panel_context,
    detail_context,
    detail_fragments,
    in_tab,
    item_context,
    overview_approvals_context,
    overview_counts_context,
)

logger = logging.getLogger("steward.live")

PAGES = {"overview", "executions", "execution", "approvals", "approval", "other"}

# Closing codes (4000-4999 are the application's): the page shows why live updates stopped.
UNAUTHENTICATED = 4401
FORBIDDEN = 4403
NOT_FOUND = 4404


class LiveConsumer(AsyncWebsocketConsumer):
    groups_joined: list[str]

    async def connect(self) -> None:
        self.groups_joined = []
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=UNAUTHENTICATED)
            return
        self.user = user
        params = parse_qs(self.scope.get("query_string", b"").decode(), keep_blank_values=False)
        self.params = QueryDict(mutable=True)
        for key, values in params.items():
            self.params.setlist(key, values)
        self.page = self.params.get("page", "other")
        if self.page not in PAGES:
            self.page = "other"
        problem = await fanout.in_thread(self._authorise)()
        if problem:
            await self.close(code=problem)
            return
        workspace_id = self.membership.workspace_id
        await self._join(events.workspace_approvals_group(workspace_id))
        if self.page in {"overview", "executions"}:
            await self._join(events.workspace_executions_group(workspace_id))
        if self.page == "execution":
            await self._join(events.execution_group(self.object_id))
        await self.accept()

    async def _join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined.append(group)

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, without its `aclose_old_connections()` before every message: that
        hops onto Django's one thread for sync code once per message per socket — at 500
        sockets a process, 500 hops per change, with sync views (the Approve POST) queueing
        behind them. This consumer touches the database only through `fanout.in_thread`, which
        closes its connections around each call itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Pages do not talk back on this socket; anything sent is ignored."""

    def _authorise(self) -> int | None:
        memberships = Membership.objects.filter(user=self.user).select_related("workspace")
        wanted = self.params.get("ws")
        try:
            membership = (
                memberships.filter(workspace_id=wanted).first()
                if wanted
                else memberships.order_by("created_at").first()
            )
        except Exception:  # noqa: BLE001 - a malformed id is simply not a membership
            membership = None
        if membership is None:
            return FORBIDDEN
        self.membership = membership
        self.workspace = membership.workspace
        self.workspace_id = str(membership.workspace_id)
        self.object_id = None
        if self.page == "execution":
            execution = _in_workspace(Execution, self.params.get("id"), membership.workspace_id)
            if execution is None:
                return NOT_FOUND
            self.object_id = str(execution.pk)
        elif self.page == "approval":
            approval = _in_workspace(Approval, self.params.get("id"), membership.workspace_id)
            if approval is None:
                return NOT_FOUND
            self.object_id = str(approval.pk)
        elif self.page == "executions":
            try:
                self.filters = fanout.ListFilters.from_params(self.params)
            except Exception:  # noqa: BLE001 - bad filters: the page shows the error; no inserts
                self.filters = None
            since = parse_datetime((self.params.get("since") or "").replace(" ", "+"))
            self.since = since or timezone.now()
            self.insert = self.params.get("insert") == "1" and self.filters is not None
        return None

    # --- group messages ----------------------------------------------------------------------
    #
    # Each handler awaits the process's one load+render of the change (fanout.shared), then does
    # only in-memory work for this socket. Keys carry the workspace, and the user and role
    # wherever the fragment depends on who looks.

    def _viewer(self) -> tuple:
        return (self.user.pk, self.membership.role)

    async def execution_changed(self, message: dict[str, Any]) -> None:
        if message.get("workspace_id") not in (None, self.workspace_id):
            return
        try:
            html = await self._execution_changed(message)
        except Exception:  # noqa: BLE001 - one bad message must not kill the page's socket
            logger.exception("live update failed for %s", message)
            return
        if html:
            await self.send(text_data=html)

    async def _execution_changed(self, message: dict[str, Any]) -> str | None:
        execution_id, step = message.get("execution_id"), message.get("transition_id")
        # A transition id names one change: any load for it is recent enough.
        fresh = (
            {} if step is not None else {"fresh_after": time.monotonic(), "gather": fanout.GATHER}
        )
        if self.page == "executions":
            row = await fanout.shared.get(
                ("row", self.workspace_id, execution_id, step),
                partial(fanout.load_row, workspace_id=self.workspace_id, execution_id=execution_id),
                **fresh,
            )
            if row is None:
                return None
            return row.insert if await self._inserts(row.execution) else row.in_place
        if self.page == "execution" and execution_id == self.object_id:
            return await fanout.shared.get(
                ("detail", self.workspace_id, execution_id, step, *self._viewer()),
                partial(self._detail, message),
                **fresh,
            )
        if self.page == "overview":
            return await fanout.shared.get(
                ("overview", self.workspace_id, execution_id, step), self._overview, **fresh
            )
        return None

    async def _inserts(self, execution: Any) -> bool:
        """Whether this list page puts the row on top (a new run its filters select)."""
        if not self.insert or execution.created_at < self.since:
            return False
        filters = self.filters.now()  # "last 24 h" moves with the clock
        matches = fanout.row_matches(execution, filters)
        if matches is None:  # a filter only the database can decide
            matches = await fanout.in_thread(fanout.row_matches_in_database)(execution, filters)
        return matches

    async def execution_stream(self, message: dict[str, Any]) -> None:
        if self.page != "execution" or message.get("execution_id") != self.object_id:
            return
        html = await fanout.shared.get(
            ("stream", fanout.message_key(message)),  # rendered from the message alone
            partial(_stream_html, message),
        )
        if html:
            await self.send(text_data=html)

    async def approval_changed(self, message: dict[str, Any]) -> None:
        if message.get("workspace_id") not in (None, self.workspace_id):
            return
        # The same approval can send the same message twice (a second vote): only a load that
        # began after this message arrived is known to include its change.
        fresh = {"fresh_after": time.monotonic(), "gather": fanout.GATHER}
        content = fanout.message_key(message)
        try:
            parts = [
                await fanout.shared.get(
                    ("nav", self.workspace_id, content),
                    partial(fanout.nav_count_html, workspace_id=self.workspace_id),
                    **fresh,
                )
            ]
            if self.page in {"approvals", "approval", "execution", "overview"}:
                tab = self.params.get("tab", "all")
                key = ("approval", self.workspace_id, self.page, self.object_id, tab, content)
                parts.append(
                    await fanout.shared.get(
                        (*key, *self._viewer()), partial(self._approval, message), **fresh
                    )
                )
        except Exception:  # noqa: BLE001
            logger.exception("live update failed for %s", message)
            return
        html = "".join(p for p in parts if p)
        if html:
            await self.send(text_data=html)

    # --- renderers (run once per change, on the live threads; see fanout) ----------------------

    def _detail(self, message: dict[str, Any]) -> str:
        execution = selectors.execution_get(workspace=self.workspace, execution_id=self.object_id)
        context = detail_context(
            execution, membership=self.membership, user=self.user, with_events=False
        )
        parts = [detail_fragments(context)]
        step = Transition.objects.filter(
            pk=message.get("transition_id"), execution_id=execution.pk
        ).first()
        if step is not None:
            item = render_to_string(
                "executions/detail.html#timeline_item", {**context, "t": step, "new": True}
            )
            parts.append(f'<ol hx-swap-oob="beforeend:#exec-timeline">{item}</ol>')
        return "".join(parts)

    def _overview(self) -> str:
        context = {**overview_counts_context(self.workspace), "oob": True}
        return render_to_string("executions/overview.html#counts", context)

    def _approval(self, message: dict[str, Any]) -> str:
        """The page's own part for an approval change (the badge is rendered apart)."""
        approval = (
            Approval.objects.select_related("execution__agent", "workspace")
            .prefetch_related("assignee_users", "decisions")
            .filter(pk=message.get("approval_id"), workspace_id=self.membership.workspace_id)
            .first()
        )
        if approval is None:
            return ""
        if self.page == "approvals":
            tab = self.params.get("tab", "all")
            context = {**item_context(approval, self.membership, self.user), "oob": True}
            html = render_to_string("approvals/inbox.html#item", context)
            if approval.status == "pending" and in_tab(approval, tab, self.membership, self.user):
                context["oob"] = False
                html = render_to_string("approvals/inbox.html#item", context)
                html = f'<ul hx-swap-oob="afterbegin:#inbox-items">{html}</ul>'
            return html
        if self.page == "approval" and str(approval.pk) == self.object_id:
            context = approval_detail_context(approval, self.membership, self.user)
            context.update({"oob": True, "context_page": "approval"})
            return render_to_string("approvals/_panel.html#panel", context)
        if self.page == "execution" and str(approval.execution_id) == self.object_id:
            execution = Execution.objects.select_related("agent").get(
                pk=self.object_id, workspace_id=self.membership.workspace_id
            )
            context = approval_panel_context(execution, membership=self.membership, user=self.user)
            context["oob"] = True
            return render_to_string("approvals/_panel.html#panel", context)
        if self.page == "overview":
            context = {**overview_approvals_context(self.workspace), "oob": True}
            return render_to_string("executions/overview.html#approvals_card", context)
        return ""


def _in_workspace(model: Any, object_id: Any, workspace_id: Any) -> Any:
    try:
        pk = uuid.UUID(str(object_id))
    except (TypeError, ValueError):
        return None
    return model.objects.filter(pk=pk, workspace_id=workspace_id).first()


class _Event:
    def __init__(self, message: dict[str, Any]) -> None:
        self.id = message.get("event_id")
        self.type = message.get("event")
        self.data = message.get("data") or {}


def _stream_html(message: dict[str, Any]) -> str:
    span = render_to_string("executions/_event.html", {"ev": _Event(message)}).strip()
    if not span:
        return ""
    return f'<div hx-swap-oob="beforeend:#exec-stream">{span}</div>'
