"""`manage.py worker [--concurrency N] [--grace S]`: run executions from the execution table
(the run queue, engine/queue.py) and side work (django.tasks: webhooks, e-mail).

SIGTERM / SIGINT: stop claiming, let running executions reach their next step boundary for up
to `--grace` seconds, hand back the rest (lease released, runnable at once) and exit 0. A
second signal exits at once (leases then expire and any worker claims those runs again).
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from executions.engine.worker import Worker, side_queues


class Command(BaseCommand):
    help = "Run executions (the execution table is the queue) and side work (django.tasks)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--concurrency",
            type=int,
            default=settings.WORKER_CONCURRENCY,
            help="executions run at once in this process (default: WORKER_CONCURRENCY)",
        )
        parser.add_argument(
            "--queues",
            default=",".join(side_queues()),
            help="comma-separated django.tasks queues for side work (default: all configured)",
        )
        parser.add_argument("--name", default="worker", help="a name for the logs")
        parser.add_argument(
            "--poll-interval",
            type=float,
            default=None,
            help="longest idle sleep without a wake-up (a safety net; default LEASE_SECONDS)",
        )
        parser.add_argument(
            "--grace",
            type=float,
            default=30.0,
            help="seconds running executions get to reach a step boundary on shutdown",
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
        sys.stderr.flush()
        # Exit now, whatever threads remain: a run past the grace period (handed back) may
        # still sit in a blocking call, and the SDK preload may still be importing; neither
        # may keep the process alive. The exit handlers (e.g. flushing live events) run first.
        atexit._run_exitfuncs()
        os._exit(0)
