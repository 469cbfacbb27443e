"""Live events: published only after the change is committed (DESIGN.md §7).

Groups:
- `execution.<id>`: everything about one execution (transitions, streamed chunks).
- `workspace.<id>.executions`: list/overview changes of a workspace.
- `workspace.<id>.approvals`: approval inbox changes of a workspace.

Messages carry ids and small facts; consumers render the HTML fragment for their page, and the
SSE endpoints turn the same messages into frames for programs.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import threading
from typing import Any

from asgiref.sync import SyncToAsync, async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger("steward.events")

_listeners: list = []


def execution_group(execution_id: Any) -> str:
    return f"execution.{execution_id}"


def workspace_executions_group(workspace_id: Any) -> str:
    return f"workspace.{workspace_id}.executions"


def workspace_approvals_group(workspace_id: Any) -> str:
    return f"workspace.{workspace_id}.approvals"


def add_listener(fn) -> None:
    """Register an in-process callback run for every committed transition (webhooks, waiters)."""
    if fn not in _listeners:
        _listeners.append(fn)


def send_many(items: list[tuple[str, dict[str, Any]]]) -> None:
    """Send many messages (a batch's): through the publisher thread, one Redis pipeline per
    lane instead of a round trip each; elsewhere (in-memory layer, a server loop) one by one.
    Each group's messages keep their order."""
    if not items:
        return
    layer = get_channel_layer()
    if layer is None:
        return
    if getattr(layer, "publish_off_thread", False) or _needs_own_loop():
        if not _publish_here(layer, items):
            _publisher().submit_many(layer, items)
        return
    for group, message in items:
        send(group, message)


def _publish_here(layer: Any, items: list[tuple[str, dict[str, Any]]]) -> bool:
    """Send from this thread (a synchronous pipeline) instead of handing over to the publisher
    thread, when the layer can (live.layer.PubSubLayer.publish_now) and the publisher has
    nothing queued: then no earlier message of a group is still waiting there to be
    overtaken. An idle worker's batch end reaches its client without the thread hop (idle
    latency, docs/performance-history.md "Engine"); a busy one's queue keeps every group in order.
    While the layer is down, the publisher thread bears the failures, not the caller."""
    publish_now = getattr(layer, "publish_now", None)
    instance = _publisher_instance
    if publish_now is None or layer_health.down or (instance is not None and instance.pending):
        return False
    try:
        if not publish_now(items):
            return False
    except Exception as exc:  # noqa: BLE001 - best effort, like send()
        layer_health.failed(exc)
    else:
        layer_health.worked()
    return True


def send(group: str, message: dict[str, Any]) -> None:
    """Send to a channel group; a failing layer must never undo or break the committed write."""
    layer = get_channel_layer()
    if layer is None:
        return
    if getattr(layer, "publish_off_thread", False) or _needs_own_loop():
        _publisher().submit(layer, group, message)
        return
    try:
        async_to_sync(layer.group_send)(group, message)
    except Exception as exc:  # noqa: BLE001 - live updates are best effort; the database is the truth
        layer_health.failed(exc)
    else:
        layer_health.worked()


class LayerHealth:
    """Whether the channel layer (Redis) is reachable, as seen by the sends of this process.

    An outage is logged once when it begins and once when it ends, not as a traceback per
    event: during one, every commit would otherwise log one. Pages need no message from here
    to catch up: their sockets drop with the layer, and a page that reconnects re-fetches
    what it missed (static/js)."""

    def __init__(self) -> None:
        self.down = False
        self.lost = 0  # messages not delivered during the current outage
        self.lock = threading.Lock()

    def failed(self, exc: BaseException) -> None:
        with self.lock:
            self.lost += 1
            if self.down:
                return
            self.down = True
        logger.warning(
            "live updates paused: the channel layer is unreachable (%s: %s); pages catch up "
            "when it returns",
            type(exc).__name__,
            exc,
        )

    def worked(self) -> None:
        if not self.down:  # the common case, without taking the lock
            return
        with self.lock:
            if not self.down:
                return
            self.down, lost = False, self.lost
            self.lost = 0
        logger.warning("live updates resumed: the channel layer is reachable again (%d lost)", lost)


layer_health = LayerHealth()


def _needs_own_loop() -> bool:
    """Whether to hand the message to the publisher thread instead of async_to_sync:
    - in a thread with no server loop to route to (a `worker` process, a management command),
      async_to_sync would start a new event loop — and a new Redis connection — per message;
    - in sync code running on a thread whose event loop is running (a sync callback on the
      server's loop, Playwright's sync API in the browser tests), async_to_sync refuses."""
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        pass
    return getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None) != os.getpid()


class _Publisher:
    """One long-lived event loop thread per process that sends messages. A few consumer tasks
    share the work; a group always goes to the same consumer, so its messages keep their
    order, and the channel layer's connection pool is never asked for more than `LANES`."""

    LANES = 4

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.queues: list[asyncio.Queue] = []
        self.pending = 0
        self.idle = threading.Condition()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.queues = [asyncio.Queue() for _ in range(self.LANES)]
            for queue in self.queues:
                self.loop.create_task(self._consume(queue))
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="steward-publisher", daemon=True)
        self.thread.start()
        ready.wait()

    async def _consume(self, queue: Any) -> None:
        while True:
            layer, group, message = await queue.get()
            try:
                if group is None:  # a batch (submit_many): `message` is its list of items
                    await _group_send_many(layer, message)
                else:
                    await layer.group_send(group, message)
            except Exception as exc:  # noqa: BLE001 - best effort, like send()
                layer_health.failed(exc)
            else:
                layer_health.worked()
            finally:
                with self.idle:
                    self.pending -= 1
                    self.idle.notify_all()

    def flush(self, timeout: float = 2.0) -> None:
        """Wait (bounded) until every submitted message went out: a command or script that
        commits and exits must not lose its last events with this daemon thread."""
        with self.idle:
            self.idle.wait_for(lambda: self.pending <= 0, timeout=timeout)

    def submit_many(self, layer: Any, items: list[tuple[str, dict[str, Any]]]) -> None:
        """A batch: split by lane (a group always goes to the same lane, so its messages stay
        in order with the single ones), each lane's part sent as one pipeline."""
        lanes: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        for group, message in items:
            lanes.setdefault(hash(group) % self.LANES, []).append((group, message))
        with self.idle:
            self.pending += len(lanes)
        for lane, part in lanes.items():
            self.loop.call_soon_threadsafe(self.queues[lane].put_nowait, (layer, None, part))

    def submit(self, layer: Any, group: str, message: dict[str, Any]) -> None:
        with self.idle:
            self.pending += 1
        queue = self.queues[hash(group) % self.LANES]
        self.loop.call_soon_threadsafe(queue.put_nowait, (layer, group, message))


async def _group_send_many(layer: Any, items: list[tuple[str, dict[str, Any]]]) -> None:
    """group_send for many messages: on channels-redis's pub/sub layer, the PUBLISHes of each
    shard go in one pipeline (one round trip); any other layer gets them one by one."""
    loop_layer = layer._get_layer() if hasattr(layer, "_get_layer") else None
    shard_of = getattr(loop_layer, "_get_shard", None)
    channel_of = getattr(loop_layer, "_get_group_channel_name", None)
    if shard_of is None or channel_of is None or not hasattr(layer, "serialize"):
        for group, message in items:
            await layer.group_send(group, message)
        return
    shards: dict[int, tuple[Any, list[tuple[str, bytes]]]] = {}
    for group, message in items:
        channel = channel_of(group)
        shard = shard_of(channel)
        shards.setdefault(id(shard), (shard, []))[1].append((channel, layer.serialize(message)))
    for shard, published in shards.values():
        async with shard._lock:
            shard._ensure_redis()
            pipe = shard._redis.pipeline(transaction=False)
            for channel, data in published:
                pipe.publish(channel, data)
            await pipe.execute()


_publisher_instance: _Publisher | None = None
_publisher_lock = threading.Lock()


def _publisher() -> _Publisher:
    global _publisher_instance
    with _publisher_lock:
        if _publisher_instance is None:
            _publisher_instance = _Publisher()
            atexit.register(_publisher_instance.flush)
    return _publisher_instance


def transitions_committed(batch: list[tuple[Any, list[Any]]], stored: list[Any] = ()) -> None:
    """A batch of executions written at once (lifecycle.append_batch), after its commit: each
    one's status moves and last entry published, all in one hand-over to the publisher;
    listeners hear every entry, as with `transition_committed`. `stored`: events committed
    with them (a run thread's one-statement write), published in the same hand-over, after
    the entries (as `stream_events` would: one Redis pipeline per write instead of two)."""
    items: list[tuple[str, dict[str, Any]]] = []
    for execution, steps in batch:
        for i, step in enumerate(steps):
            message = _changed(execution, step)
            if i == len(steps) - 1 or message["status_changed"]:
                items.append((execution_group(execution.pk), message))
                if message["status_changed"]:
                    items.append((workspace_executions_group(execution.workspace_id), message))
    items += [_stream_item(event) for event in stored]
    send_many(items)
    for execution, steps in batch:
        for step in steps:
            _hear(execution, step)


def stream_events(stored: list[Any]) -> None:
    """`stream_event` for many stored events (a batch's), in one hand-over."""
    send_many([_stream_item(e) for e in stored])


def _stream_item(e: Any) -> tuple[str, dict[str, Any]]:
    """A stored event's live message, to its execution's group."""
    message = {"type": "execution.stream", "execution_id": str(e.execution_id)}
    message.update(event=e.type, event_id=e.pk, data=e.data)
    return execution_group(e.execution_id), message


def _changed(execution: Any, step: Any) -> dict[str, Any]:
    return {
        "type": "execution.changed",
        "execution_id": str(execution.pk),
        "workspace_id": str(execution.workspace_id),
        "transition_id": step.pk,
        "seq": step.seq,
        "transition_type": step.type,
        "from_status": step.from_status,
        "status": step.to_status,
        "status_changed": step.from_status != step.to_status or step.type == "init",
        "updated_at": step.created_at.isoformat(),
        "transition_count": step.seq,
        "agent_id": str(execution.agent_id),
        "parent_id": str(execution.parent_id) if execution.parent_id else None,
    }


def _hear(execution: Any, step: Any) -> None:
    for listener in list(_listeners):
        try:
            listener(execution=execution, transition=step)
        except Exception:  # noqa: BLE001
            logger.exception("event listener %r failed", listener)


def transition_committed(*, execution: Any, transition: Any, publish: bool = True) -> None:
    """Called on commit by lifecycle: tell every interested group about the new transition.

    Built from the committed Transition itself (its seq, from/to status and time are exactly
    what this change did), so publishing costs no extra query per transition. `publish=False`
    (a step in the middle of a batch the engine wrote at once) runs the listeners only: the
    batch's last entry is published and a page fills the seq gap by reading.
    """
    message = _changed(execution, transition)
    if publish:
        # Both groups in one hand-over (one Redis pipeline): a create or a status change
        # publishes twice, and each send was a queue hand-over and a round trip of its own.
        groups = [execution_group(execution.pk)]
        if message["status_changed"]:
            groups.append(workspace_executions_group(execution.workspace_id))
        send_many([(group, message) for group in groups])
    _hear(execution, transition)


def stream_event(
    *, execution_id: Any, event_type: str, data: dict[str, Any], event_id: int
) -> None:
    """A streamed engine event (content, tool_start…), already stored; fan it out live."""
    send(
        execution_group(execution_id),
        {
            "type": "execution.stream",
            "execution_id": str(execution_id),
            "event": event_type,
            "event_id": event_id,
            "data": data,
        },
    )


def approval_changed(
    *, approval_id: Any, workspace_id: Any, execution_id: Any, status: str
) -> None:
    message = {
        "type": "approval.changed",
        "approval_id": str(approval_id),
        "workspace_id": str(workspace_id),
        "execution_id": str(execution_id) if execution_id else None,
        "status": status,
    }
    send(workspace_approvals_group(workspace_id), message)
    if execution_id:
        send(execution_group(execution_id), message)
