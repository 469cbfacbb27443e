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
from asyncio import FIRST_COMPLETED
from functools import partial
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer

from executions.live import events
from executions.live.layer import OUTAGE_ERRORS

# The channel layer (Redis) is away: the page retries later (the htmx ws extension reconnects
# after 1012/1013) and then re-syncs from its position.
TRY_AGAIN_LATER = 1013


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
        except StopConsumer:
            pass
        finally:
            if group_loop is not None:
                group_loop.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await group_loop

    async def _group_messages(self) -> None:
        while True:
            await self.dispatch(await self.channel_receive())

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch, without its `aclose_old_connections()` before every message (see
        the module docstring): the sync views (the Approve POST) no longer queue behind it."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)
