"""The run queue's wake-up, for callers outside the engine (services, approvals).

Executions are not django.tasks: the execution row is the queue (engine/queue.py). A start, a
decision or an answer leaves the row runnable in its own transaction (pending or running, with
`runnable_at` due); this wakes the workers once it commits. django.tasks (django-tasks-db)
carries only side work (webhooks, e-mail), run by the same worker processes.
"""

from __future__ import annotations

from typing import Any

from executions.engine import queue


def enqueue_run(execution_id: Any, *, run_after: Any = None, fresh: Any = None) -> None:
    """Called on commit: wake the workers (at `run_after`, when given, instead of now).
    `fresh`: the Execution just started, which the wake-up may carry to a worker."""
    if run_after is not None:
        queue.make_runnable(execution_id, at=run_after)
    else:
        queue.wake(fresh=fresh)
