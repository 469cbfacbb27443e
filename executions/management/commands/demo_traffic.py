"""`manage.py demo_traffic --rate R [--duration S]`: start executions of the demo agents
continuously (a mix of refunds under and over the approval threshold, questions, greetings),
so the dashboard has life."""

from __future__ import annotations

import random
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from executions import services
from executions.models import Agent, Workspace

NAMES = ["Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances"]
QUESTIONS = [
    "What is 17 * 23?",
    "Look up order A-1001 and tell me its total.",
    "How much is 12.5% of 480?",
    "What is the status of order A-1002?",
]


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
        from executions.demo import demo_seed

        demo_seed(workspace=workspace)
        agents = {
            a.name: a
            for a in Agent.objects.for_workspace(workspace).filter(
                name__in=["refund-desk", "research-assistant", "python-greeter"]
            )
        }
        rng = random.Random(options["seed"])
        interval = 1.0 / options["rate"]
        deadline = time.monotonic() + options["duration"] if options["duration"] else None
        started = 0
        next_at = time.monotonic()
        try:
            while deadline is None or time.monotonic() < deadline:
                name, payload = self._pick(rng)
                agent = agents.get(name)
                if agent is not None:
                    services.execution_start(
                        workspace=workspace,
                        agent=agent,
                        input=payload,
                        metadata={"source": "demo_traffic"},
                    )
                    started += 1
                next_at += interval
                time.sleep(max(0.0, next_at - time.monotonic()))
        except KeyboardInterrupt:
            pass
        self.stdout.write(f"started {started} execution(s)")

    def _pick(self, rng: random.Random) -> tuple[str, dict[str, Any]]:
        roll = rng.random()
        if roll < 0.4:
            order = rng.choice(["A-1001", "A-1002", "A-1003", "A-1004"])
            amount = rng.choice([15, 40, 80, 120, 250])
            return "refund-desk", {"order_id": order, "amount": amount}
        if roll < 0.75:
            return "research-assistant", {"question": rng.choice(QUESTIONS)}
        return "python-greeter", {"name": rng.choice(NAMES)}
