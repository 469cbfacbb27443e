"""Retention: finished executions older than their workspace's retention are deleted, leaving
a tombstone so reading one answers "expired" instead of a bare 404. Streamed events of finished
executions are kept only STREAM_REPLAY_SECONDS, and finished task rows a day."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from executions import rollups
from executions.lifecycle import TERMINAL
from executions.models import Execution, ExecutionEvent, ExecutionTombstone, Workspace

logger = logging.getLogger("steward.worker")

TASK_ROWS_KEPT = timedelta(days=1)


def purge(*, now: Any = None, batch: int = 1000, dry_run: bool = False) -> dict[str, int]:
    now = now or timezone.now()
    counts = {"executions": 0, "events": 0, "tasks": 0}
    for workspace in Workspace.objects.all().only("pk", "retention_days"):
        days = workspace.retention_days or settings.DEFAULT_RETENTION_DAYS
        cutoff = now - timedelta(days=days)
        while True:
            ids = list(
                Execution.objects.filter(
                    workspace=workspace, status__in=TERMINAL, created_at__lt=cutoff
                ).values_list("pk", flat=True)[:batch]
            )
            if not ids:
                break
            if dry_run:
                counts["executions"] += len(ids)
                break
            with transaction.atomic():
                # Children go with their parent (cascade); they get tombstones too.
                children = list(
                    Execution.objects.filter(parent_id__in=ids).values_list("pk", flat=True)
                )
                ExecutionTombstone.objects.bulk_create(
                    [
                        ExecutionTombstone(id=pk, workspace=workspace, purged_at=now)
                        for pk in [*ids, *children]
                    ],
                    ignore_conflicts=True,
                )
                rollups.rollup_forget([*ids, *children])
                Execution.objects.filter(pk__in=ids).delete()
            counts["executions"] += len(ids)
            if len(ids) < batch:
                break
    if not dry_run:
        stale = now - timedelta(seconds=settings.STREAM_REPLAY_SECONDS)
        counts["events"] = ExecutionEvent.objects.filter(
            created_at__lt=stale, execution__status__in=TERMINAL
        ).delete()[0]
        counts["tasks"] = _prune_task_rows(now - TASK_ROWS_KEPT)
        counts["rollups_folded"] = rollups.rollup_fold(now=now)
    if counts["executions"]:
        logger.info("retention: purged %d execution(s)", counts["executions"])
    return counts


def _prune_task_rows(before: Any) -> int:
    # django_tasks_db's models load only once the app registry is ready; retention runs late.
    from django_tasks_db.compat import TaskResultStatus
    from django_tasks_db.models import DBTaskResult

    return DBTaskResult.objects.filter(
        status__in=[TaskResultStatus.SUCCESSFUL, TaskResultStatus.FAILED], finished_at__lt=before
    ).delete()[0]
