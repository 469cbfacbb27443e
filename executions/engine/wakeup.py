"""Wake idle workers as soon as work is queued, so none sits out a polling interval.

In one process: every Worker subscribes a threading.Event that `notify()` sets. With Redis: a
pub/sub message on CHANNEL that a listener thread in every worker process turns into the same
local wake-up. Workers still poll on a short interval as a safety net (and for `run_after`).
"""

from __future__ import annotations

import logging
import threading
import time

from django.conf import settings

logger = logging.getLogger("steward.engine")

CHANNEL = "steward:wakeup"
# Kept for callers that wait on "any work queued in this process".
local_event = threading.Event()
_subscribers: set[threading.Event] = set()
_subscribers_lock = threading.Lock()
_redis = None
_lock = threading.Lock()
_listener: threading.Thread | None = None


def _client():
    global _redis
    if not settings.REDIS_URL:
        return None
    with _lock:
        if _redis is None:
            import redis  # only with REDIS_URL: the embedded topology never loads it

            _redis = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2)
    return _redis


def subscribe() -> threading.Event:
    event = threading.Event()
    with _subscribers_lock:
        _subscribers.add(event)
    return event


def unsubscribe(event: threading.Event) -> None:
    with _subscribers_lock:
        _subscribers.discard(event)


def _wake_local() -> None:
    local_event.set()
    with _subscribers_lock:
        for event in _subscribers:
            event.set()


def notify() -> None:
    _wake_local()
    client = _client()
    if client is None:
        return
    try:
        client.publish(CHANNEL, b"1")
    except Exception:  # noqa: BLE001 - the poll interval is the fallback
        logger.warning("could not publish worker wake-up", exc_info=True)


def start_listener() -> None:
    """Listen to the Redis channel in a daemon thread (once per process; no-op without Redis)."""
    global _listener
    if not settings.REDIS_URL:
        return
    with _lock:
        if _listener is not None and _listener.is_alive():
            return
        _listener = threading.Thread(target=_listen, name="steward-wakeup", daemon=True)
        _listener.start()


def _listen() -> None:
    import redis  # only with REDIS_URL, as above

    delay = 0.5
    while True:
        try:
            client = redis.Redis.from_url(settings.REDIS_URL)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            pubsub.subscribe(CHANNEL)
            delay = 0.5
            for message in pubsub.listen():
                if message and message.get("type") == "message":
                    _wake_local()
        except Exception:  # noqa: BLE001 - reconnect; polling covers the gap
            logger.warning("wake-up listener lost Redis; reconnecting", exc_info=True)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
