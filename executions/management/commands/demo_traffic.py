"""`manage.py demo_traffic --rate R [--duration S]`: start executions of the demo agents
continuously (a mix of refunds under and over the approval threshold, questions, greetings),
so the dashboard has life."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from executions.demo import demo_traffic
from executions.models import Workspace


class Command(BaseCommand):
    help = "Start demo executions continuously."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--rate", type=float, default=1.0, help="executions per second")
        parser.add_argument("--duration", type=float, default=0.0, help="seconds (0: forever)")
        parser.add_argument("--workspace", default="default", help="workspace slug")
        parser.add_argument("--seed", type=int, default=None)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["rate"] <= 0:
            raise CommandError("--rate must be positive")
        workspace = Workspace.objects.filter(slug=options["workspace"]).first()
        if workspace is None:
            raise CommandError(f"no workspace {options['workspace']!r}; run `make up` first")
        try:
            started = demo_traffic(
                workspace=workspace,
                rate=options["rate"],
                duration=options["duration"],
                seed=options["seed"],
            )
        except KeyboardInterrupt:
            return
        self.stdout.write(f"started {started} execution(s)")
