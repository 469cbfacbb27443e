"""What a step leaves behind: its result as a step function returns it, its record as read
back from the history, and the JSON form both are stored in."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass
class StepResult:
    """What a step function returns when it has more to record than its output."""

    output: Any
    usage: dict[str, int] | None = None
    cost: Decimal | None = None
    input: Any = None
    message: str = ""


@dataclass
class Recorded:
    output: Any
    kind: str
    usage: dict[str, Any] | None
    cost: Decimal | None


# The columns of a step's record that a run replays from (RunContext, and a batch's start).
REPLAY_COLUMNS = ("step_path", "step_kind", "output", "usage", "cost")


class StartedRows(list):
    """The step records a batch has just written with a fresh run's start (engine/batch.py),
    handed to the run's thread: the run is running under this worker's lease, its start just
    proven — not a run resumed after its worker died (runner.context_for)."""

    def __init__(self, rows: list[dict[str, Any]], written_at: float) -> None:
        super().__init__(rows)
        self.written_at = written_at  # time.monotonic() when its start committed


def _default(obj: Any) -> Any:
    if isinstance(obj, Decimal):
        return float(obj)
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)


def jsonable(value: Any) -> Any:
    """The value as it will read back from the database, so a live run and a replay agree."""
    return json.loads(json.dumps(value, default=_default))
