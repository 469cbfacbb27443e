"""Background tasks: thin wrappers that call the engine and services (DESIGN.md §3)."""

from __future__ import annotations

from typing import Any

from django.tasks import task


@task(queue_name="executions")
def run_execution(execution_id: str) -> None:
    from executions.engine import runner

    runner.run(execution_id)


def enqueue_run(execution_id: Any, *, run_after: Any = None) -> None:
    """Queue a run of the execution (called on commit, so the worker sees the committed row)."""
    queued = run_execution.using(run_after=run_after) if run_after else run_execution
    queued.enqueue(str(execution_id))
    from executions.engine import wakeup

    wakeup.notify()
