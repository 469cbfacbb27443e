"""Wake idle workers as soon as work is queued, so none sits out a polling interval.

Embedded: a threading.Event in this process. With Redis: a pub/sub message every worker listens
to. Workers still poll on a long interval as a safety net.
"""

from __future__ import annotations

import logging
import threading

from django.conf import settings

logger = logging.getLogger("steward.engine")

CHANNEL = "steward:wakeup"
local_event = threading.Event()
_redis = None
_lock = threading.Lock()


def _client():
    global _redis
    if not settings.REDIS_URL:
        return None
    with _lock:
        if _redis is None:
            import redis

            _redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
    return _redis


def notify() -> None:
    local_event.set()
    client = _client()
    if client is None:
        return
    try:
        client.publish(CHANNEL, b"1")
    except Exception:  # noqa: BLE001 - the poll interval is the fallback
        logger.warning("could not publish worker wake-up", exc_info=True)
