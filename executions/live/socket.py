"""The base of the live sockets: Channels' websocket consumer with a cheaper path for group
messages, and a quiet refusal while the channel layer is away.

Channels' `AsyncConsumer.__call__` reads both sources (the client and the channel layer)
through `await_many_dispatch`, which runs `asyncio.wait` over fresh tasks at every message,
and its `dispatch` hops onto Django's thread for sync code (`aclose_old_connections()`)
before every handler. With one group message fanned out to 1,000 sockets, both are paid
1,000 times per change; a profile of a server at 500 sockets showed them as a visible share
of its time. Here group messages (nearly all the traffic) are read in a plain loop of their
own, and `dispatch` calls the handler directly: the live consumer touches the database only
through `fanout.in_thread`, which closes its connections around each call itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from asyncio import FIRST_COMPLETED
from functools import partial
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from channels.sessions import InstanceSessionWrapper

from executions.live import events, fanout
from executions.live.layer import OUTAGE_ERRORS

logger = logging.getLogger("steward.live")

# The channel layer (Redis) is away: the page retries later (the htmx ws extension reconnects
# after 1012/1013) and then re-syncs from its position.
TRY_AGAIN_LATER = 1013
INTERNAL_ERROR = 1011
SETTLE_SECONDS = 1.0


class GroupSocket(AsyncWebsocketConsumer):
    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """A socket that cannot get its channel (Redis is away) is refused quietly: the outage
        is logged once (events.layer_health), and the page retries with backoff."""
        try:
            await self._serve(scope, receive, send)
        except OUTAGE_ERRORS as exc:
            events.layer_health.failed(exc)
            await send({"type": "websocket.close", "code": TRY_AGAIN_LATER})

    async def _serve(self, scope: dict, receive: Any, send: Any) -> None:
        """Channels' AsyncConsumer.__call__, with group messages read by a loop of their own.
        The page's own messages (connect, `shown`, disconnect) are rare and keep the general
        path; the group loop starts once `connect` has run (joined, and replayed), and
        everything goes through `dispatch`."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.channel_receive = partial(self.channel_layer.receive, self.channel_name)
        self.base_send = send
        self._frame_send = _innermost(send)
        self._taken: asyncio.Task | None = None  # a message the layer handed over directly
        self._handling = False  # the queue loop is running a handler
        fast = getattr(self.channel_layer, "_get_layer", None)
        fast = getattr(fast(), "fast", None) if fast is not None else None
        group_loop: asyncio.Task | None = None
        try:
            while True:
                incoming = asyncio.ensure_future(receive())
                if group_loop is not None:
                    await asyncio.wait({incoming, group_loop}, return_when=FIRST_COMPLETED)
                    if group_loop.done() and not incoming.done():
                        incoming.cancel()
                        group_loop.result()  # a failure in a handler ends the socket
                await self.dispatch(await incoming)
                if group_loop is None:
                    group_loop = asyncio.ensure_future(self._group_messages())
                    if fast is not None:  # the layer's fan-out (executions.live.layer)
                        fast[self.channel_name] = self
        except StopConsumer:
            pass
        finally:
            if fast is not None:
                fast.pop(self.channel_name, None)
            for task in (group_loop, self._taken):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _group_messages(self) -> None:
        while True:
            message = await self.channel_receive()
            self._handling = True
            try:
                if self._taken is not None and not self._taken.done():
                    await asyncio.wait({self._taken})  # it came first: keep the order
                await self.dispatch(message)
            finally:
                self._handling = False

    # --- the layer's fan-out (executions.live.layer.LoopLayer) -------------------------------

    def idle(self) -> bool:
        """Nothing of this socket's is being handled: a new message may be handled at once."""
        return not self._handling and (self._taken is None or self._taken.done())

    def take(self, message: dict[str, Any]) -> bool:
        """Handle a group message now, in an eager task: it runs to its end here unless it has
        to wait. Returns whether it finished."""
        task = asyncio.Task(self._take(message), loop=asyncio.get_running_loop(), eager_start=True)
        if task.done():
            return True
        self._taken = task
        return False

    async def _take(self, message: dict[str, Any]) -> None:
        try:
            await self.dispatch(message)
        except OSError:  # the client left (uvicorn's ClientDisconnected): its disconnect
            return  # arrives on its own and ends the socket; nothing to log
        except Exception:  # noqa: BLE001 - as a failure in the queue loop: the socket ends
            logger.exception("live socket handler failed; closing the socket")
            await self.close(code=INTERNAL_ERROR)

    async def settle(self) -> None:
        """Wait until the renders under way are done (bounded: a slow client must not hold
        the fan-out back), so the next sockets find them ready."""
        running = fanout.shared.running
        if running:
            await asyncio.wait(set(running), timeout=SETTLE_SECONDS)

    async def send(self, text_data: Any = None, bytes_data: Any = None, close: Any = False) -> None:
        """A frame goes straight to the server's websocket: the session middleware's send
        wrapper only acts on HTTP responses, yet read the session's state for every frame."""
        if text_data is not None and not close:
            await self._frame_send({"type": "websocket.send", "text": text_data})
        else:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, without its `aclose_old_connections()` before every message (see
        the module docstring): the sync views (the Approve POST) no longer queue behind it."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)


def _innermost(send: Any) -> Any:
    """The server's own `send` under Channels' session middleware wrappers (`real_send`)."""
    owner = getattr(send, "__self__", None)
    while isinstance(owner, InstanceSessionWrapper):
        send = owner.real_send
        owner = getattr(send, "__self__", None)
    return send
