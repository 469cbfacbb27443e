"""Wake idle workers as soon as work is queued, so none sits out a polling interval.

In one process: every Worker subscribes a threading.Event that `notify()` sets. With Redis: a
pub/sub message on the deployment's channel (CHANNEL + its Redis database) that a listener
thread in every worker process turns into the same local wake-up. A wake-up may carry a
later due time (a sleep's end), so a worker busy with other runs knows when to claim it
without asking the database. Workers still wait at most a long safety-net interval, against
a lost message.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from datetime import datetime

from django.conf import settings

logger = logging.getLogger("steward.engine")

CHANNEL = "steward:wakeup"  # + ":<db>", the Redis database of REDIS_URL (channel_of)
# Kept for callers that wait on "any work queued in this process".
local_event = threading.Event()
_subscribers: set[threading.Event] = set()
# Per subscriber: the earliest later due time announced to it (time.monotonic()).
_hints: dict[threading.Event, float] = {}
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


def channel_of(client) -> str:
    """The wake-up channel of the deployment on `client`'s Redis database. Pub/sub ignores
    the database number: two deployments on one Redis server (say prod on /0, staging on /1,
    or the tests and a bench on this machine) woke each other's workers for nothing, each
    wake-up a claim that finds no row, on every worker, competing for a CPU."""
    return f"{CHANNEL}:{client.connection_pool.connection_kwargs.get('db') or 0}"


def subscribe() -> threading.Event:
    event = threading.Event()
    with _subscribers_lock:
        _subscribers.add(event)
    return event


def unsubscribe(event: threading.Event) -> None:
    with _subscribers_lock:
        _subscribers.discard(event)
        _hints.pop(event, None)


def _wake_local(at: float | None = None) -> None:
    """Wake every subscriber; `at` (epoch seconds) is a later due time they should know of."""
    due = None if at is None else time.monotonic() + (at - time.time())
    local_event.set()
    with _subscribers_lock:
        for event in _subscribers:
            if due is not None:
                _hints[event] = min(_hints.get(event, due), due)
            event.set()


def take_hint(event: threading.Event) -> float | None:
    """The earliest due time (time.monotonic()) announced to this subscriber since the last
    call: a worker busy with other runs then knows when to claim without asking the database."""
    with _subscribers_lock:
        return _hints.pop(event, None)


def notify(at: datetime | None = None) -> None:
    """Wake the workers: work is due now, or (with `at`) will be at that time.

    The in-process subscribers are woken here. A due-now wake-up with no PUBLISH in flight is
    published at once from the caller's thread: one round trip to Redis, where the hand-over
    to the sender thread cost an idle start more (a thread wake-up and a GIL hand-over before
    the PUBLISH even left). Otherwise the request goes to one sender thread per process, so
    the caller (a start's after-commit hook) does not wait behind another PUBLISH, and many
    wake-ups requested while a PUBLISH is in flight are served by ONE more PUBLISH sent after
    it: every request made before a PUBLISH is sent (so after its commit) is covered by that
    PUBLISH; none is dropped."""
    global _want_now, _want_at, _inline
    epoch = at.timestamp() if at is not None else None
    _wake_local(epoch)
    if not settings.REDIS_URL:
        return
    with _send_cond:
        inline = epoch is None and not (_sending or _inline or _want_now)
        # After a failed PUBLISH, callers stop waiting on Redis for a while: the sender
        # thread bears a Redis that hangs, not the requests that start executions.
        inline = inline and time.monotonic() - _failed_at > INLINE_PAUSE_SECONDS
        if inline:
            _inline += 1
    if inline:
        try:
            _publish(True, None)
        finally:
            with _send_cond:
                _inline -= 1
                _send_cond.notify_all()  # flush()
        return
    with _send_cond:
        if epoch is None:
            _want_now = True
        else:
            _want_at = epoch if _want_at is None else min(_want_at, epoch)
        _start_sender()
        _send_cond.notify_all()  # the sender (and any flush() waiting)


# The sender's pending requests: a due-now wake-up, and the earliest later due time.
_send_cond = threading.Condition()
_want_now = False
_want_at: float | None = None
_sending = False
_inline = 0  # PUBLISHes in flight on callers' threads (notify)
_failed_at = -1e9  # when (time.monotonic()) a PUBLISH last failed
INLINE_PAUSE_SECONDS = 5.0
_sender: threading.Thread | None = None


def _start_sender() -> None:
    """Called with _send_cond held."""
    global _sender
    if _sender is None or not _sender.is_alive():
        _sender = threading.Thread(target=_send_loop, name="steward-wakeup-send", daemon=True)
        _sender.start()


@atexit.register
def flush(timeout: float = 1.0) -> None:
    """Wait (bounded) until the requested wake-ups went out: a command that starts an
    execution and exits must not leave its wake-up in the daemon thread."""
    with _send_cond:
        _send_cond.wait_for(
            lambda: not (_want_now or _want_at is not None or _sending or _inline),
            timeout=timeout,
        )


def _send_loop() -> None:
    global _want_now, _want_at, _sending
    while True:
        with _send_cond:
            _sending = False
            _send_cond.notify_all()  # flush()
            while not _want_now and _want_at is None:
                _send_cond.wait()
            now, at = _want_now, _want_at
            _want_now, _want_at, _sending = False, None, True
        _publish(now, at)


def _publish(now: bool, at: float | None) -> None:
    global _failed_at
    client = _client()
    if client is None:
        return
    try:
        if now:
            client.publish(channel_of(client), b"1")
        if at is not None:
            client.publish(channel_of(client), repr(at).encode())
    except Exception:  # noqa: BLE001 - the poll interval is the fallback
        _failed_at = time.monotonic()
        logger.warning("could not publish worker wake-up", exc_info=True)


def _due_of(data: object) -> float | None:
    """A wake-up's payload: b"1" (due now) or the epoch seconds of a later due time."""
    try:
        value = float(data)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if value > 1.0 else None


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
            pubsub.subscribe(channel_of(client))
            delay = 0.5
            for message in pubsub.listen():
                if message and message.get("type") == "message":
                    _wake_local(_due_of(message.get("data")))
        except Exception:  # noqa: BLE001 - reconnect; polling covers the gap
            logger.warning("wake-up listener lost Redis; reconnecting", exc_info=True)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
