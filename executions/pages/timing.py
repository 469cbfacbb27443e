"""Where an execution's time went: the steps waterfall and running vs waiting time.

Steps carry their own start and end. Waits do not (an approval step is recorded when it is
decided, in a few ms), so a wait is read from the history instead: it begins at the "wait"
(approval, input, child run) or "sleep" entry and ends at the next entry, or now while it lasts.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.utils import timezone

from executions.lifecycle import PARKED, TERMINAL
from executions.models import Execution, Transition

STEP_CLASS = {
    "prompt": "llm",
    "llm": "llm",
    "model": "llm",
    "agent": "llm",
    "tool": "tool",
    "tool_call": "tool",
    "approval": "approval",
    "wait_for_input": "input",
    "error": "error",
}
WAIT_TYPES = {"wait", "sleep"}
WAIT_LABEL = {"approval": "waiting for approval", "input": "waiting for input",
              "wait": "waiting"}  # fmt: skip


def step_class(kind: str, step_type: str = "") -> str:
    if step_type in {"error"}:
        return "error"
    return STEP_CLASS.get(kind or "", "step")


def _wait(execution: Execution, step: Any, later: Any) -> dict[str, Any]:
    """The wait that begins at `step` and ends at `later` (the next entry, or None)."""
    if step.to_status == "awaiting_approval":
        cls = "approval"
    elif step.to_status == "awaiting_input":
        cls = "input"
    else:
        cls = "wait"
    label = "sleeping" if step.type == "sleep" else WAIT_LABEL[cls]
    if later is not None:
        end, still = later.created_at, False
    elif execution.completed_at:
        end, still = execution.completed_at, False
    else:
        end, still = timezone.now(), True
    return {"step": step, "cls": cls, "label": label, "start": step.created_at,
            "end": max(end, step.created_at), "open": still}  # fmt: skip


def waits(execution: Execution, steps: list) -> list[dict[str, Any]]:
    """Every wait in `steps` (consecutive entries, in order) as {step, cls, label, start, end,
    open}."""
    return [
        _wait(execution, step, steps[i + 1] if i + 1 < len(steps) else None)
        for i, step in enumerate(steps)
        if step.type in WAIT_TYPES
    ]


def all_waits(executions: list[Execution]) -> dict[Any, list[dict[str, Any]]]:
    """Every wait of each execution, from its whole history, in two queries at most for any
    number of executions: the wait entries, then the entries right after them."""
    ids = [e.pk for e in executions if e.started_at]
    found: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    if not ids:
        return found
    entries = list(
        Transition.objects.filter(execution_id__in=ids, type__in=WAIT_TYPES)
        .only("execution_id", "seq", "type", "to_status", "step_path", "created_at")
        .order_by("execution_id", "seq")
    )
    if not entries:
        return found
    after = {
        (t.execution_id, t.seq): t
        for t in Transition.objects.filter(
            execution_id__in={t.execution_id for t in entries},
            seq__in={t.seq + 1 for t in entries},
        ).only("execution_id", "seq", "created_at")
    }
    by_id = {e.pk: e for e in executions}
    for entry in entries:
        later = after.get((entry.execution_id, entry.seq + 1))
        found[entry.execution_id].append(_wait(by_id[entry.execution_id], entry, later))
    return found


def run_times(execution: Execution, parked: list[dict[str, Any]]) -> dict[str, Any]:
    """Time running and time waiting (ms): one meaning wherever a run's time is shown (the
    list, the overview, the execution page). Running is the run's own clock (`duration_ms`
    once it ended: the engine leaves out time it was handed back at a shutdown; start to now
    while it lasts) less its waits (approval, input, sleep, child run), which are counted
    separately. `waiting_since` is when the open wait began, for a parked run's ticking clock;
    `running_from` is a virtual start that makes a live clock tick from the running time."""
    if not execution.started_at:
        return {"running_ms": None, "waiting_ms": None, "waiting_since": None,
                "running_from": None}  # fmt: skip
    now = timezone.now()
    if execution.duration_ms is not None:
        total = float(execution.duration_ms)
    else:
        end = execution.completed_at or now
        total = max((end - execution.started_at).total_seconds() * 1000, 0)
    # An open wait up to the same `now` as the total: a parked run's time running is then
    # fixed (start to its wait, less earlier waits), not off by however long ago _wait() read
    # the clock — the list page and the live row rendered it a few ms apart, and differed.
    ends = [(max(now, w["start"]) if w["open"] else w["end"], w["start"]) for w in parked]
    waiting = sum((end - start).total_seconds() * 1000 for end, start in ends)
    running = int(max(total - waiting, 0))
    still = next((w for w in parked if w["open"]), None)
    return {
        "running_ms": running,
        "waiting_ms": int(waiting),
        "waiting_since": still["start"] if still else None,
        "running_from": now - timedelta(milliseconds=running),
    }


def attach_times(executions: list[Execution]) -> list[Execution]:
    """Set `e.times` (run_times) on each execution, as the rows' duration cell reads it."""
    found = all_waits(executions)
    for execution in executions:
        execution.times = run_times(execution, found.get(execution.pk, []))
    return executions


def waterfall(execution: Execution, steps: list) -> dict[str, Any]:
    """Start offset and width (percent of the run) of every timed step and every wait."""
    timed = [s for s in steps if s.started_at and s.ended_at]
    parked = waits(execution, steps)
    begin = execution.started_at or execution.created_at
    begin = min([begin, *[s.started_at for s in timed], *[w["start"] for w in parked]])
    if execution.completed_at:
        end = execution.completed_at
    elif execution.status in {"running", "pending"} or execution.status in PARKED:
        end = timezone.now()
    else:
        end = max([begin, *[s.created_at for s in steps]])
    end = max([end, *[s.ended_at for s in timed], *[w["end"] for w in parked]])
    span = max((end - begin).total_seconds() * 1000, 1.0)

    def place(start: datetime, stop: datetime) -> dict[str, Any]:
        offset = (start - begin).total_seconds() * 1000
        length = max((stop - start).total_seconds() * 1000, 0)
        return {"left": round(100 * offset / span, 2), "ms": int(length),
                "width": round(min(max(100 * length / span, 0.4), 100 - 100 * offset / span), 2),
                "offset_ms": int(offset)}  # fmt: skip

    rows = []
    for step in timed:
        usage = step.usage or {}
        rows.append(
            {
                "step": step,
                "name": step.step_path or step.type,
                "cls": step_class(step.step_kind, step.type),
                "tokens": usage.get("total_tokens")
                or (usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0))
                or None,
                "cost": step.cost,
                "start": step.started_at,
                **place(step.started_at, step.ended_at),
            }
        )
    for wait in parked:
        rows.append(
            {
                "step": wait["step"],
                "name": wait["step"].step_path or wait["label"],
                "cls": wait["cls"],
                "wait": wait["label"],
                "open": wait["open"],
                "start": wait["start"],
                **place(wait["start"], wait["end"]),
            }
        )
    rows.sort(key=lambda r: (r["start"], r["step"].seq))
    return {"rows": rows, "span_ms": int(span), "ticks": _ticks(span),
            "live": execution.status not in TERMINAL}  # fmt: skip


def _ticks(span: float) -> list[dict[str, Any]]:
    """Axis labels at round values (0, 10 s, 20 s… not 0, 8.6 s, 17.2 s)."""
    steps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 15_000, 30_000,
             60_000, 120_000, 300_000, 600_000, 900_000, 1_800_000, 3_600_000, 7_200_000,
             21_600_000, 43_200_000, 86_400_000]  # fmt: skip
    every = next((s for s in steps if span / s <= 5), steps[-1])
    ticks = []
    value = 0
    while value <= span:
        ticks.append({"ms": value, "left": round(100 * value / span, 2)})
        value += every
    return ticks
