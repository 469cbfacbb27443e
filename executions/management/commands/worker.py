"""`manage.py worker [--concurrency N] [--queues a,b]`: run queued executions (and other tasks).

SIGTERM / SIGINT stop claiming and hand running executions back at their next step boundary
(lease released, run queued again); a second signal exits at once (leases then expire and the
reaper re-queues them).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from executions.engine.worker import Worker, default_queues


class Command(BaseCommand):
    help = "Run executions from the task queue (django-tasks-db)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--concurrency",
            type=int,
            default=settings.WORKER_CONCURRENCY,
            help="executions run at once in this process (default: WORKER_CONCURRENCY)",
        )
        parser.add_argument(
            "--queues",
            default=",".join(default_queues()),
            help="comma-separated queue names (default: all configured queues)",
        )
        parser.add_argument("--name", default="worker", help="a name for the logs")
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=1.0,
            help="seconds between polls when no wake-up arrives (default 1)",
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=30.0,
            help="seconds to wait for running executions to hand back on shutdown",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        logger = logging.getLogger("steward")
        if options["verbosity"] >= 1 and logger.level in (logging.NOTSET,):
            logger.setLevel(logging.INFO)
        worker = Worker(
            concurrency=options["concurrency"],
            name=options["name"],
            queues=[q.strip() for q in options["queues"].split(",") if q.strip()],
            poll_interval=options["poll_interval"],
            grace_seconds=options["grace"],
        )

        def on_signal(signum: int, frame: Any) -> None:
            if worker.stopping:
                self.stderr.write("second signal: exiting now")
                os._exit(1)
            worker.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.stdout.write(f"worker {worker.owner} started", ending="\n")
        self.stdout.flush()
        worker.run()
        sys.stdout.flush()
        if worker.inflight:
            os._exit(0)  # threads stuck in a blocking call must not keep the process alive
