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

from channels_redis.pubsub import (
    RedisPubSubChannelLayer,
    RedisPubSubLoopLayer,
    RedisSingleShardConnection,
)
from channels_redis.utils import _wrap_close
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from executions.live.events import layer_health

logger = logging.getLogger("steward.events")

OUTAGE_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, OSError)
RETRY_SECONDS = 0.5
RESYNC = {"type": "live.resync"}


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

    def _recovered(self) -> None:
        """Subscribed again (redis-py re-subscribes on reconnect): tell every local socket."""
        self.lost = False
        layer_health.worked()
        layer = self.channel_layer
        resync = layer.channel_layer.serialize(RESYNC)
        for queue in list(layer.channels.values()):
            queue.put_nowait(resync)


class LoopLayer(RedisPubSubLoopLayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._shards = [Shard(shard.host, self) for shard in self._shards]

    async def _subscribe_to_channel(self, channel: str) -> None:
        try:
            await super()._subscribe_to_channel(channel)
        except OUTAGE_ERRORS:
            self.channels.pop(channel, None)  # no queue left behind for a socket never opened
            raise


class PubSubLayer(RedisPubSubChannelLayer):
    """RedisPubSubChannelLayer whose per-loop layers use `Shard`."""

    def _get_layer(self) -> RedisPubSubLoopLayer:
        loop = asyncio.get_running_loop()
        try:
            return self._layers[loop]
        except KeyError:
            layer = LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            self._layers[loop] = layer
            _wrap_close(self, loop)
            return layer
