"""Wake idle workers as soon as work is queued, so none sits out a polling interval.

In one process: every Worker subscribes a threading.Event that `notify()` sets. With Redis,
between processes, work due now is ONE token on a Redis list (TOKENS), taken by one worker
process that has room for it (a blocking BLPOP on a thread of its own, only while one of its
workers could claim): one idle worker wakes and claims, not every worker at once, each one's
claim competing for the CPU with the one that will get the row (~1 ms of an idle run's
latency on two cores, docs/performance-history.md "Engine"). A process that takes a token and has no
room after all pushes it back for another. A worker whose claim filled its batch passes a
token on, so the others join a backlog. A later due time (a sleep's end) goes to every
process on the deployment's pub/sub channel (CHANNEL + its Redis database), so a worker busy
with other runs knows when to claim it without asking the database. The row stays the
queue: a token lost (a process killed holding it) or trimmed only delays a run until a worker
next looks (a run's end, its due-time query, at worst the safety-net interval).
"""

from __future__ import annotations

import atexit
import inspect
import logging
import threading
import time
import weakref
from collections.abc import Callable
from datetime import datetime

from django.conf import settings

logger = logging.getLogger("steward.engine")

CHANNEL = "steward:wakeup"  # + ":<db>", the Redis database of REDIS_URL (channel_of)
# Kept for callers that wait on "any work queued in this process".
local_event = threading.Event()
_subscribers: set[threading.Event] = set()
# Subscribers a wake-up reached since they last looked (take_notified).
_notified: set[threading.Event] = set()
# Per subscriber: the earliest later due time announced to it (time.monotonic()).
_hints: dict[threading.Event, float] = {}
# Per subscriber that said so: what runs a token's own run (engine/tokens.py), held weakly.
_on_run: dict[threading.Event, Callable[[], Callable[[bytes], bool] | None]] = {}
# Per subscriber that said so: whether it could claim now (a worker with room). A bound
# method is held weakly: a Worker built and dropped without unsubscribing (the tests do) must not
# stay alive here for the process's life with its lease keeper's database connection.
_ready: dict[threading.Event, Callable[[], Callable[[], bool] | None]] = {}
# Signalled when a subscriber may have room again (a run ended): the token taker waits on it.
_room = threading.Condition()
# A due-now token that only wakes (engine/tokens.py's WAKE; other tokens carry a run).
TOKEN_WAKE = b"1"
# Tokens kept at most: more would only be claims that find nothing once workers have room.
TOKENS_MAX = 16
# How long one BLPOP blocks before the taker looks at its room again (not a polling interval:
# a token wakes it at once).
TOKEN_WAIT_SECONDS = 5
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


def tokens_of(client) -> str:
    """The deployment's list of due-now tokens (on its own Redis database already)."""
    return f"{channel_of(client)}:tokens"


def subscribe(
    ready: Callable[[], bool] | None = None, on_run: Callable[[bytes], bool] | None = None
) -> threading.Event:
    """An event set on every wake-up of this process. `ready`: whether the subscriber could
    claim now; this process takes due-now tokens only while one of its subscribers could
    (one without `ready` always could). `on_run(token)`: runs the run a token carries, True
    if it did (then nobody is woken), False to have the subscriber claim as for any token."""
    event = threading.Event()
    with _subscribers_lock:
        _subscribers.add(event)
        if ready is not None:
            _ready[event] = _weak(ready)
        if on_run is not None:
            _on_run[event] = _weak(on_run)
    room_changed()
    return event


def _weak(fn: Callable) -> Callable[[], Callable | None]:
    """A bound method held weakly (its object may go without unsubscribing: the tests)."""
    if inspect.ismethod(fn):
        return weakref.WeakMethod(fn)
    return lambda fn=fn: fn


def unsubscribe(event: threading.Event) -> None:
    with _subscribers_lock:
        _subscribers.discard(event)
        _hints.pop(event, None)
        _ready.pop(event, None)
        _on_run.pop(event, None)
        _notified.discard(event)


def has_room() -> bool:
    """Whether a subscriber of this process could claim now."""
    with _subscribers_lock:
        subscribers = [(event, _ready.get(event)) for event in _subscribers]
    room = False
    for event, ref in subscribers:
        if ref is None:
            return True
        ready = ref()
        if ready is None:  # its worker is gone
            unsubscribe(event)
        elif ready():
            room = True
    return room


def room_changed() -> None:
    """A subscriber may have room again (a run ended): the token taker looks again."""
    with _room:
        _room.notify_all()


def _wake_local(at: float | None = None) -> None:
    """Wake every subscriber; `at` (epoch seconds) is a later due time they should know of."""
    due = None if at is None else time.monotonic() + (at - time.time())
    local_event.set()
    with _subscribers_lock:
        for event in _subscribers:
            if due is not None:
                _hints[event] = min(_hints.get(event, due), due)
            _notified.add(event)
            event.set()


def take_notified(event: threading.Event) -> bool:
    """Whether a wake-up (work announced) reached this subscriber since the last call, as
    opposed to its event set by its own process (a run of its own ended)."""
    with _subscribers_lock:
        if event in _notified:
            _notified.discard(event)
            return True
        return False


def take_hint(event: threading.Event) -> float | None:
    """The earliest due time (time.monotonic()) announced to this subscriber since the last
    call: a worker busy with other runs then knows when to claim without asking the database."""
    with _subscribers_lock:
        return _hints.pop(event, None)


def notify(at: datetime | None = None, token: bytes = TOKEN_WAKE) -> None:
    """Wake the workers: work is due now, or (with `at`) will be at that time. `token`: what
    the due-now token carries (engine/tokens.py: a fresh run's row), sent as it is only on
    the inline path below; a wake-up the sender thread merges with others is a plain one.

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
            _publish(True, None, token)
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


def pass_on() -> None:
    """A worker's claim filled its batch: one more token, for another worker with room to
    join (sent by the sender thread; the claiming thread goes on at once)."""
    global _want_now
    if not settings.REDIS_URL:
        return
    with _send_cond:
        _want_now = True
        _start_sender()
        _send_cond.notify_all()


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


def _publish(now: bool, at: float | None, token: bytes = TOKEN_WAKE) -> None:
    global _failed_at
    client = _client()
    if client is None:
        return
    try:
        if now:
            # One token for one worker; the list trimmed so tokens nobody took (every worker
            # busy) do not pile up.
            pipe = client.pipeline(transaction=False)
            pipe.lpush(tokens_of(client), token)
            pipe.ltrim(tokens_of(client), 0, TOKENS_MAX - 1)
            pipe.execute()
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
    """Listen to the Redis channel and take due-now tokens, each in a daemon thread (once per
    process; no-op without Redis)."""
    global _listener, _taker
    if not settings.REDIS_URL:
        return
    with _lock:
        if _listener is None or not _listener.is_alive():
            _listener = threading.Thread(target=_listen, name="steward-wakeup", daemon=True)
            _listener.start()
        if _taker is None or not _taker.is_alive():
            _taker = threading.Thread(target=_take, name="steward-wakeup-take", daemon=True)
            _taker.start()


_taker: threading.Thread | None = None


def _take() -> None:
    """Take due-now tokens while this process has room, and wake its workers with each."""
    import redis  # only with REDIS_URL, as above

    delay = 0.5
    while True:
        try:
            # A socket timeout longer than the BLPOP's own (redis-py's default is not).
            client = redis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=TOKEN_WAIT_SECONDS + 10
            )
            key = tokens_of(client)
            delay = 0.5
            while True:
                with _room:
                    _room.wait_for(has_room, timeout=TOKEN_WAIT_SECONDS)
                taken = has_room() and client.blpop([key], timeout=TOKEN_WAIT_SECONDS)
                if taken:
                    take_token(client, key, taken[1])
        except Exception:  # noqa: BLE001 - reconnect; the row is still the queue
            logger.warning("wake-up token taker lost Redis; reconnecting", exc_info=True)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def take_token(client, key: str, token: bytes = TOKEN_WAKE) -> None:
    """A token taken: run the run it carries here (on this thread: no hand-over to the
    worker's loop), or wake this process's workers to claim; or — no room left since the
    BLPOP began (runs started meanwhile) — push it back, as it was, for another process."""
    if not has_room():
        client.lpush(key, token)
        return
    if token != TOKEN_WAKE and _run_here(token):
        return
    _wake_local()


def _run_here(token: bytes) -> bool:
    """The token's run, by the first subscriber that runs tokens (a worker): True if it did."""
    with _subscribers_lock:
        runners = list(_on_run.values())
    for ref in runners:
        run = ref()
        if run is not None:
            try:
                return run(token)
            except Exception:  # noqa: BLE001 - then it is claimed, as for a plain token
                logger.exception("running a token's run failed")
                return False
    return False


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
