"""Sleeps: a short one runs inline (still stoppable), a long one parks the execution in place
(still running, no lease) and frees the worker until it is due."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from executions.engine import queue
from executions.engine.stop import Park

# Sleeps shorter than this run inline; longer ones park the execution and free the worker.
INLINE_SLEEP_SECONDS = 0.5


class Timers:
    """The sleep part of RunContext. Uses: state, recorded, gate(), check(),
    should_stop(), raise_stop(), record(), parked_state(), park_in_place()."""

    def sleep(self, path: str, seconds: float, passthrough: Any) -> Any:
        done = self.recorded.get(path)
        if done is not None:
            return passthrough
        self.gate()  # a batch does not sleep: the run goes to a thread of its own
        self.check()
        if seconds <= INLINE_SLEEP_SECONDS:
            deadline = time.monotonic() + max(0.0, seconds)
            while time.monotonic() < deadline:
                if self.should_stop():
                    self.raise_stop()
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
            self.record(path, "sleep", input={"seconds": seconds}, output={"slept": seconds})
            return passthrough
        sleeps = dict(self.state.get("sleeps") or {})
        now = timezone.now()
        if path in sleeps:
            until = datetime.fromisoformat(sleeps[path])
            if now >= until:
                sleeps.pop(path)
                state = {**self.state, "sleeps": sleeps}
                self.record(
                    path,
                    "sleep",
                    input={"seconds": seconds},
                    output={"slept": seconds},
                    extra_fields={"state": state},
                )
                self.state = state
                return passthrough
        else:
            until = now + timedelta(seconds=seconds)
            sleeps[path] = until.isoformat()

        def park() -> None:
            state = self.parked_state()
            state["sleeps"] = sleeps
            state["parked"] = {"kind": "sleep", "path": path, "until": until.isoformat()}
            self.park_in_place(
                "sleep",
                path=path,
                message=f"sleeping until {until.isoformat()}",
                state=state,
                runnable_at=until,
            )
            # Idle workers sleep until the next due time they know of: tell them of this one.
            transaction.on_commit(lambda: queue.wake(at=until))

        raise Park("sleep", park)
