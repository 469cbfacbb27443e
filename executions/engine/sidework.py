"""Side work: the django.tasks (django-tasks-db) queues a worker process runs beside its
executions — webhooks and e-mail, never executions (the execution row is their queue). Taken
a few at a time by the worker's maintenance tick, each run on a side thread of its own, so a
slow webhook never holds a run's thread."""

from __future__ import annotations

import logging
from typing import Any

from django.db import OperationalError, close_old_connections
from django.utils import timezone
from django_tasks_db.compat import TaskContext, TaskResultStatus
from django_tasks_db.models import DBTaskResult
from django_tasks_db.utils import exclusive_transaction

logger = logging.getLogger("steward.worker")


def take(*, backend: str, queues: list[str], owner: str, limit: int) -> list[Any]:
    """Up to `limit` ready tasks of `queues`, marked running for `owner` in one transaction
    (none when another worker holds SQLite's write lock: the next tick tries again)."""
    if not queues:
        return []
    ready = DBTaskResult.objects.ready().filter(backend_name=backend, queue_name__in=queues)
    try:
        with exclusive_transaction(ready.db):
            rows = list(ready.select_for_update(skip_locked=True)[:limit])
            if rows:
                DBTaskResult.objects.filter(pk__in=[r.pk for r in rows]).update(
                    status=TaskResultStatus.RUNNING,
                    started_at=timezone.now(),
                    worker_ids=[owner[:64]],
                )
    except OperationalError as exc:
        if "locked" in str(exc).lower():
            return []
        raise
    return rows


def run(row: Any) -> None:
    """Run one taken task and record how it ended on its row."""
    try:
        task = row.task
        args = row.args_kwargs
        if task.takes_context:
            task.call(TaskContext(task_result=row.task_result), *args["args"], **args["kwargs"])
        else:
            task.call(*args["args"], **args["kwargs"])
        DBTaskResult.objects.filter(pk=row.pk).update(
            status=TaskResultStatus.SUCCESSFUL, finished_at=timezone.now()
        )
    except BaseException as exc:  # noqa: BLE001 - recorded on the task row
        logger.exception("task %s (%s) failed", row.pk, row.task_path)
        try:
            row.set_failed(exc)
        except Exception:  # noqa: BLE001
            logger.exception("could not mark task %s failed", row.pk)
    finally:
        close_old_connections()
