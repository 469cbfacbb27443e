"""`manage.py purge_executions`: delete finished executions past their workspace's retention
(leaving tombstones), old streamed events and finished task rows. The worker also runs this
hourly."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from executions.engine import retention


class Command(BaseCommand):
    help = "Purge executions older than their workspace's retention."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--dry-run", action="store_true", help="count, do not delete")
        parser.add_argument("--batch", type=int, default=1000)

    def handle(self, *args: Any, **options: Any) -> None:
        counts = retention.purge(batch=options["batch"], dry_run=options["dry_run"])
        self.stdout.write(json.dumps(counts))
