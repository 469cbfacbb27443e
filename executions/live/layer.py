"""The Redis pub/sub channel layer, with an outage handled as one: logged once when Redis goes
away and once when it is back (executions.live.events.layer_health), not as a traceback every
second from the receive loop; and when it is back, every socket of this process is told to
re-sync (`live.resync`), since what was published meanwhile never arrived.

channels-redis's receive loop logs each failed read with a traceback and retries after a
second; redis-py reconnects and re-subscribes by itself on the next read. Only that loop is
replaced here; the rest is channels-redis as it ships (settings CHANNEL_LAYERS names this
class when CHANNEL_LAYER=pubsub).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import redis
from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import _consistent_hash, _wrap_close, decode_hosts
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from executions.live.events import layer_health

logger = logging.getLogger("steward.events")

OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
RETRY_SECONDS = 0.5
# The longest a sync publish (publish_now) may block its caller on a silent Redis.
SYNC_TIMEOUT_SECONDS = 2.0
_sync_lock = threading.Lock()
RESYNC = {"type": "live.resync"}
ARRIVED = "_arrived"  # a key the fan-out adds to a message (never sent over Redis)


class Shard(RedisSingleShardConnection):
    lost = False  # a read failed since the last one that worked

    async def _do_receiving(self) -> None:
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=0.1
                    )
                    if self.lost:
                        self._recovered()
                    self._receive_message(message)
                else:
                    await asyncio.sleep(0.1)
            except (TimeoutError, asyncio.CancelledError, GeneratorExit):
                raise
            except OUTAGE_ERRORS as exc:
                self.lost = True
                layer_health.failed(exc)
                await asyncio.sleep(RETRY_SECONDS)
            except Exception:  # noqa: BLE001 - as channels-redis: keep receiving
                logger.exception("unexpected error in the channel layer's receive loop")
                await asyncio.sleep(1)

    def _receive_message(self, message: Any) -> None:
        """As channels-redis, but a group message for this process's live sockets goes to the
        layer's fan-out (LoopLayer.fan_out) as one item, not one queue entry per socket."""
        if message is None:
            return
        name, data = message["channel"], message["data"]
        if isinstance(name, bytes):
            name = name.decode()
        layer = self.channel_layer
        if name in layer.channels:
            layer.channels[name].put_nowait(data)
        elif name in layer.groups:
            layer.fan_out(layer.groups[name], data)

    def _recovered(self) -> None:
        """Subscribed again (redis-py re-subscribes on reconnect): tell every local socket."""
        self.lost = False
        layer_health.worked()
        layer = self.channel_layer
        resync = layer.channel_layer.serialize(RESYNC)
        for queue in list(layer.channels.values()):
            queue.put_nowait(resync)


class LoopLayer(RedisPubSubLoopLayer):
    """The layer of one event loop, with a fan-out for the live sockets on it.

    A group message reaches every socket of the group in this process. channels-redis puts it
    on each socket's queue; each socket's task then wakes, decodes the same bytes and runs its
    handler, which waits for the process's one render of the change and wakes again: at 500
    sockets a process, that per-socket path was most of a server's time. Here a socket that
    registered (`fast`) and is idle gets the message decoded once, its handler run at once in
    an eager task that finishes without being scheduled when nothing has to wait; the first
    socket of a page kind starts the render and the fan-out waits for it, so the next sockets
    find it ready. A socket that is busy (a handler still running, messages queued) gets the
    message on its queue as before, so each socket still handles its messages in order."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._shards = [Shard(shard.host, self) for shard in self._shards]
        self.fast: dict[str, Any] = {}  # channel name -> a GroupSocket (executions.live.socket)
        self._fan_queue: asyncio.Queue | None = None
        self._fan_task: asyncio.Task | None = None

    def fan_out(self, names: Any, data: bytes) -> None:
        if not self.fast:
            for name in names:
                if name in self.channels:
                    self.channels[name].put_nowait(data)
            return
        if self._fan_task is None or self._fan_task.done():
            self._fan_queue = asyncio.Queue()
            self._fan_task = asyncio.ensure_future(self._fan_out_loop())
        self._fan_queue.put_nowait((tuple(names), data))

    async def _fan_out_loop(self) -> None:
        while True:
            names, data = await self._fan_queue.get()
            try:
                await self._fan_out_one(names, data)
            except Exception:  # noqa: BLE001 - one bad message must not stop the fan-out
                logger.exception("live fan-out failed")

    async def _fan_out_one(self, names: tuple, data: bytes) -> None:
        message = None
        for name in names:
            queue = self.channels.get(name)
            if queue is None:
                continue
            socket = self.fast.get(name)
            if socket is None or not queue.empty() or not socket.idle():
                queue.put_nowait(data)
                continue
            if message is None:
                message = self.channel_layer.deserialize(data)
                # When it reached the process (after its commit): a load that began later
                # includes its change, so every socket shares one (fanout.Shared, `fresh_after`).
                message[ARRIVED] = time.monotonic()
            if not socket.take(message):
                # It waits on something (a render under way, a slow client): let the
                # renders finish before the next sockets, which then find them ready.
                await socket.settle()

    async def _subscribe_to_channel(self, channel: str) -> None:
        try:
            await super()._subscribe_to_channel(channel)
        except OUTAGE_ERRORS:
            self.channels.pop(channel, None)  # no queue left behind for a socket never opened
            raise


class PubSubLayer(RedisPubSubChannelLayer):
    """RedisPubSubChannelLayer whose per-loop layers use `Shard`."""

    # Sync code (a view's commit hooks) publishes through events' publisher thread, not with
    # async_to_sync on the server's loop: the Approve POST no longer waits, send after send,
    # behind the loop's fan-out of the very messages it just published (a layer per loop, so
    # the thread's loop has its own connection).
    publish_off_thread = True
    # publish_now's clients, one per shard, made on first use ([]: a host it cannot serve).
    # A class attribute: an unknown one goes to the loop's layer (__getattr__).
    _sync: list[redis.Redis] | None = None

    def _get_layer(self) -> RedisPubSubLoopLayer:
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
            return layer

    def publish_now(self, items: list[tuple[str, dict[str, Any]]]) -> bool:
        """Publish group messages from this synchronous thread, one pipeline per shard: what
        `group_send` publishes (the group's channel, the serialized message), without the hop
        to an event loop. The engine's claiming thread sends a batch's ends this way when the
        publisher thread has nothing queued (live.events.send_many): at idle, the hand-over to
        that thread and its loop cost the client a few ms of its latency. False (nothing sent)
        when a host is not a plain address (e.g. Sentinel): the caller uses the loop."""
        clients = self._sync_clients()
        if clients is None:
            return False
        prefix = self._kwargs.get("prefix", "asgi")
        pipes: dict[int, Any] = {}
        for group, message in items:
            channel = f"{prefix}__group__{group}"
            shard = _consistent_hash(channel, len(clients))
            if shard not in pipes:
                pipes[shard] = clients[shard].pipeline(transaction=False)
            pipes[shard].publish(channel, self.serialize(message))
        for pipe in pipes.values():
            pipe.execute()
        return True

    def _sync_clients(self) -> list[redis.Redis] | None:
        if self._sync is None:
            with _sync_lock:
                if self._sync is None:
                    self._sync = self._make_sync_clients()
        return self._sync or None

    def _make_sync_clients(self) -> list[redis.Redis]:
        clients = []
        for host in decode_hosts(self._kwargs.get("hosts")):
            if set(host) - {"address", "socket_timeout", "socket_connect_timeout",
                            "health_check_interval"} or "address" not in host:  # fmt: skip
                return []
            timeouts = {
                name: min(float(host.get(name) or SYNC_TIMEOUT_SECONDS), SYNC_TIMEOUT_SECONDS)
                for name in ("socket_timeout", "socket_connect_timeout")
            }
            clients.append(redis.Redis.from_url(host["address"], **timeouts))
        return clients
