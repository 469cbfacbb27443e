"""The live socket of a dashboard page: one per page, HTML fragments out.

A page connects to `/ws/live/?page=<kind>&ws=<workspace id>&…`. The consumer checks the session
user (the origin is checked in config/asgi.py), that the user belongs to the workspace, and for
an execution or approval page that the object is in it; then it joins only the groups that
page needs. Group messages carry ids (executions.live.events); each is turned here into the HTML
fragments of that page (executions.live.fragments), marked `hx-swap-oob` so the htmx ws
extension swaps them in place.

Each change is loaded and rendered once per process and shared by the sockets it concerns
(executions.live.fanout); per socket there is only in-memory work:
- the execution page keeps its position (`after_event`, `after_seq` in the URL: what the page
  shows). On connect the socket replays everything after it before going live; a live message
  at or before the position is skipped, and a timeline entry that arrives ahead of a missing
  one brings the missing ones first. Every event and entry arrives once, in order.
- a list or inbox page says which rows it shows (`shown`, in the URL and later as a message
  after it fetched rows itself); it gets in-place updates for those rows only, and inserts for
  new ones its filters (or tab) take in, where the page's order puts them.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from functools import partial
from typing import Any
from urllib.parse import parse_qs

from django.http import QueryDict
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from approvals.models import Approval
from executions import selectors
from executions.live import events, fanout, fragments
from executions.live.layer import ARRIVED, OUTAGE_ERRORS
from executions.live.socket import TRY_AGAIN_LATER, GroupSocket
from executions.models import Execution

logger = logging.getLogger("steward.live")

PAGES = {"overview", "executions", "execution", "approvals", "approval", "other"}

# Closing codes (4000-4999 are the application's): the page shows why live updates stopped.
UNAUTHENTICATED = 4401
FORBIDDEN = 4403
NOT_FOUND = 4404
# Redis came back after an outage: the page reconnects and re-syncs from its position.
RESYNC = 1012
MAX_SHOWN = 1000


def _ints(value: str | None) -> int | None:
    try:
        return max(0, int(value)) if value not in (None, "") else None
    except ValueError:
        return None


def _ids(values: Any) -> set[str]:
    """The object ids a page shows (`exec-<uuid>`, `approval-item-<uuid>` or bare uuids)."""
    found = set()
    for value in list(values)[:MAX_SHOWN]:
        try:
            found.add(str(uuid.UUID(str(value)[-36:])))
        except ValueError:
            continue
    return found


class LiveConsumer(GroupSocket):
    groups_joined: list[str]

    async def connect(self) -> None:
        self.groups_joined = []
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=UNAUTHENTICATED)
            return
        self.user = user
        params = parse_qs(self.scope.get("query_string", b"").decode(), keep_blank_values=True)
        self.params = QueryDict(mutable=True)
        for key, values in params.items():
            # Blank filters mean no filter; a blank `shown` means a page that shows no rows.
            values = values if key == "shown" else [v for v in values if v]
            if values:
                self.params.setlist(key, values)
        self.page = self.params.get("page", "other")
        if self.page not in PAGES:
            self.page = "other"
        self.shown = (
            _ids(self.params.get("shown", "").split(",")) if "shown" in self.params else None
        )
        self.event_pos = _ints(self.params.get("after_event"))
        self.seq_pos = _ints(self.params.get("after_seq"))
        problem = await fanout.in_thread(self._authorise)()
        if problem:
            await self.close(code=problem)
            return
        workspace_id = self.membership.workspace_id
        try:
            await self._join(events.workspace_approvals_group(workspace_id))
            if self.page in {"overview", "executions"}:
                await self._join(events.workspace_executions_group(workspace_id))
            if self.page == "execution" or (self.page == "approval" and self.execution_id):
                await self._join(events.execution_group(self.execution_id))
        except OUTAGE_ERRORS as exc:  # the layer is down: logged once, the page retries
            events.layer_health.failed(exc)
            await self.close(code=TRY_AGAIN_LATER)
            return
        await self.accept()
        if self.page == "execution" and (self.event_pos is not None or self.seq_pos is not None):
            # Joined first, replayed second: whatever commits in between arrives both ways
            # and the position drops the second copy.
            await self._catch_up(upto_seq=None)

    async def _join(self, group: str) -> None:
        await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined.append(group)

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except OUTAGE_ERRORS as exc:  # the layer is down; nothing to undo
                events.layer_health.failed(exc)
                return

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """A page tells which rows it shows after it fetched rows itself (a reconnect's
        catch-up): `{"shown": [ids]}`. Anything else is ignored."""
        try:
            data = json.loads(text_data or "")
        except ValueError:
            return
        if isinstance(data, dict) and isinstance(data.get("shown"), list):
            self.shown = _ids(data["shown"])

    def _authorise(self) -> int | None:
        membership = selectors.membership_get(user=self.user, workspace=self.params.get("ws"))
        if membership is None:
            return FORBIDDEN
        self.membership = membership
        self.viewer = fragments.Viewer(membership=membership, user=self.user)
        self.workspace = membership.workspace
        self.workspace_id = str(membership.workspace_id)
        self.object_id = self.execution_id = None
        if self.page == "execution":
            execution = _in_workspace(Execution, self.params.get("id"), membership.workspace_id)
            if execution is None:
                return NOT_FOUND
            self.object_id = self.execution_id = str(execution.pk)
        elif self.page == "approval":
            approval = _in_workspace(Approval, self.params.get("id"), membership.workspace_id)
            if approval is None:
                return NOT_FOUND
            self.object_id = str(approval.pk)
            self.execution_id = str(approval.execution_id) if approval.execution_id else None
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
            {} if step is not None else {"fresh_after": _arrived(message), "gather": fanout.GATHER}
        )
        if self.page == "executions":
            row = await fanout.shared.get(
                ("row", self.workspace_id, execution_id, step),
                partial(fanout.load_row, workspace_id=self.workspace_id, execution_id=execution_id),
                **fresh,
            )
            if row is None:
                return None
            if await self._inserts(row.execution):
                if self.shown is not None:
                    self.shown.add(str(row.execution.pk))
                return row.insert
            if self.shown is None or str(row.execution.pk) in self.shown:
                return row.in_place
            return None  # a row this page does not show
        if self.page == "execution" and execution_id == self.object_id:
            change = await fanout.shared.get(
                ("detail", self.workspace_id, execution_id, step, *self._viewer()),
                partial(fragments.detail_change, self.viewer, execution_id, step),
                **fresh,
            )
            return await self._place(change) if change is not None else None
        if self.page == "approval" and execution_id == self.execution_id:
            return await fanout.shared.get(
                ("approval-execution", self.object_id, step, *self._viewer()),
                partial(fragments.approval_execution, self.viewer, self.object_id),
                **fresh,
            )
        if self.page == "overview":
            return await fanout.shared.get(
                ("overview", self.workspace_id, execution_id, step),
                partial(fragments.overview_counts, self.workspace),
                **fresh,
            )
        return None

    async def _place(self, change: fragments.DetailChange) -> str | None:
        """The change for this page at its position: the entry once, after those before it."""
        if change.seq is None or self.seq_pos is None:
            if change.seq is not None:
                self.seq_pos = change.seq
            return change.state + change.item
        if change.seq <= self.seq_pos:
            return change.state  # already shown (replayed on connect)
        if change.seq == self.seq_pos + 1:
            self.seq_pos = change.seq
            return change.state + change.item
        # Entries are missing in between (their messages were lost or are still on the way):
        # bring them from the database, in order, with this one.
        await self._catch_up(upto_seq=change.seq, events_too=False)
        return None

    async def _catch_up(self, *, upto_seq: int | None, events_too: bool = True) -> None:
        since = await fanout.in_thread(fragments.detail_since)(
            self.viewer,
            self.object_id,
            after_event=(self.event_pos or 0) if events_too else None,
            after_seq=self.seq_pos or 0,
            upto_seq=upto_seq,
        )
        if events_too:
            self.event_pos = since.last_event
        self.seq_pos = since.last_seq
        if since.html:
            await self.send(text_data=since.html)

    async def _inserts(self, execution: Any) -> bool:
        """Whether this list page puts the row on top (a new run its filters select)."""
        if not self.insert or execution.created_at < self.since:
            return False
        if self.shown is not None and str(execution.pk) in self.shown:
            return False
        filters = self.filters.now()  # "last 24 h" moves with the clock
        matches = fanout.row_matches(execution, filters)
        if matches is None:  # a filter only the database can decide
            matches = await fanout.in_thread(fanout.row_matches_in_database)(execution, filters)
        return matches

    async def execution_stream(self, message: dict[str, Any]) -> None:
        if self.page != "execution" or message.get("execution_id") != self.object_id:
            return
        event_id = message.get("event_id")
        if isinstance(event_id, int):
            if self.event_pos is not None and event_id <= self.event_pos:
                return  # replayed on connect already
            self.event_pos = event_id
        html = await fanout.shared.get(
            ("stream", fanout.message_key(message)),  # rendered from the message alone
            partial(fragments.stream_html, message),
        )
        if html:
            await self.send(text_data=html)

    async def approval_changed(self, message: dict[str, Any]) -> None:
        if message.get("workspace_id") not in (None, self.workspace_id):
            return
        # The same approval can send the same message twice (a second vote): only a load that
        # began after this message arrived is known to include its change.
        fresh = {"fresh_after": _arrived(message), "gather": fanout.GATHER}
        content = fanout.message_key(message)
        approval_id = message.get("approval_id")
        try:
            parts = [
                await fanout.shared.get(
                    ("nav", self.workspace_id, content),
                    partial(fanout.nav_count_html, workspace_id=self.workspace_id),
                    **fresh,
                )
            ]
            if self.page == "approvals":
                parts.append(await self._inbox(approval_id, content, fresh))
            elif self.page in {"approval", "execution", "overview"}:
                key = ("approval", self.workspace_id, self.page, self.object_id, content)
                parts.append(
                    await fanout.shared.get(
                        (*key, *self._viewer()),
                        partial(
                            fragments.approval_for_page,
                            self.viewer,
                            self.page,
                            self.object_id,
                            approval_id,
                        ),
                        **fresh,
                    )
                )
        except Exception:  # noqa: BLE001
            logger.exception("live update failed for %s", message)
            return
        html = "".join(p for p in parts if p)
        if html:
            await self.send(text_data=html)

    async def _inbox(self, approval_id: Any, content: tuple, fresh: dict) -> str:
        tab = self.params.get("tab", "all")
        change = await fanout.shared.get(
            ("inbox", self.workspace_id, tab, content, *self._viewer()),
            partial(fragments.inbox_change, self.viewer, approval_id, tab),
            **fresh,
        )
        if change is None:
            return ""
        shown = self.shown is None or change.approval_id in self.shown
        # A page of a longer tab takes no inserts (the new item may belong on another page);
        # the page script puts an insert where the tab's order (soonest due first) places it.
        whole = self.params.get("whole", "1") == "1"
        if change.insert and whole and not (self.shown is not None and shown):
            if self.shown is not None:
                self.shown.add(change.approval_id)
            return change.tabs + change.insert
        return change.tabs + (change.in_place if shown else "")

    async def live_resync(self, message: dict[str, Any]) -> None:
        """The channel layer came back after an outage: messages may have been lost, so the
        page reconnects, and catches up from its position like after any drop."""
        await self.close(code=RESYNC)


def _arrived(message: dict[str, Any]) -> float:
    """When the message reached this process: stamped once by the layer's fan-out for all its
    sockets, else now (a socket that had it queued)."""
    return message.get(ARRIVED) or time.monotonic()


def _in_workspace(model: Any, object_id: Any, workspace_id: Any) -> Any:
    try:
        pk = uuid.UUID(str(object_id))
    except (TypeError, ValueError):
        return None
    return model.objects.filter(pk=pk, workspace_id=workspace_id).first()
