"""Runs one claimed execution: replay what is recorded, run the rest, and end in one of
finished, failed, parked (approval / input / sleep / child) or handed back.

The claim (engine/queue.py) hands over the row itself, so a run starts without re-reading it;
the agent and its version come from a per-process cache (versions are immutable once used).
The status only ever changes through lifecycle.transition(). Every status change this module
makes is logged on one line (the worker's log).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from executions import lifecycle
from executions.engine import agent_loop, python_runtime, queue, workflow
from executions.engine.context import (
    ApprovalRejected,
    BudgetExceeded,
    Cancelled,
    HandBack,
    LeaseLost,
    Park,
    RunContext,
    StepFailed,
    jsonable,
)
from executions.engine.records import StartedRows
from executions.lifecycle import TERMINAL, GuardFailed, IllegalTransition, Status
from executions.models import Agent, AgentType, AgentVersion, Execution
from executions.schemas import violations

logger = logging.getLogger("steward.worker")

_default_owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
# Agents change rarely (a rename, a new current version), versions never once used.
AGENT_CACHE_SECONDS = 5.0
_agents: dict[Any, tuple[float, Agent]] = {}
_versions: dict[Any, AgentVersion] = {}
_cache_lock = threading.Lock()


def run(execution_id: Any, *, worker: Any = None) -> None:
    """Run one execution now, in this thread, if its lease can be had (tests, commands)."""
    owner = worker.owner if worker is not None else _default_owner
    if not queue.claim_one(execution_id, owner=owner):
        logger.debug("execution %s is held by another worker; skipping", execution_id)
        return
    execution = Execution.objects.filter(pk=execution_id).first()
    if execution is not None:
        run_claimed(execution, owner=owner, worker=worker)


def _attach(execution: Execution) -> None:
    """Give the row its agent and version from the cache (one query each on a miss)."""
    now = time.monotonic()
    with _cache_lock:
        cached = _agents.get(execution.agent_id)
        version = _versions.get(execution.agent_version_id)
    if cached is None or now - cached[0] > AGENT_CACHE_SECONDS:
        agent = Agent.objects.get(pk=execution.agent_id)
        with _cache_lock:
            _agents[execution.agent_id] = (now, agent)
    else:
        agent = cached[1]
    if version is None and execution.agent_version_id is not None:
        version = AgentVersion.objects.get(pk=execution.agent_version_id)
        with _cache_lock:
            if len(_versions) > 2000:
                _versions.clear()
            _versions[execution.agent_version_id] = version
    execution.agent = agent
    execution.agent_version = version


def _log(execution: Execution, src: str, to: str, extra: str = "") -> None:
    if logger.isEnabledFor(logging.INFO):
        logger.info(
            "execution %s %s: %s -> %s%s",
            execution.pk,
            execution.agent.name,
            src,
            to,
            f" ({extra})" if extra else "",
        )


def context_for(
    execution: Execution,
    *,
    owner: str,
    worker: Any = None,
    pure_only: bool = False,
    rows: list | None = None,
) -> RunContext:
    """The run context of a claimed execution: a fresh run's start held back with its first
    steps, a run its batch has just started (`rows`: StartedRows, the steps written with the
    start), or a resumed run's records read for replay (`rows`: already read by a batch)."""
    execution_id = execution.pk
    if execution.status == Status.PENDING:
        ctx = RunContext(execution, owner=owner, worker=worker, fresh=True, pure_only=pure_only)
        started = {"execution_id": str(execution_id), "user_message_id": ""}
        ctx.defer_start(("execution", started))
        return ctx
    ctx = RunContext(execution, owner=owner, worker=worker, pure_only=pure_only, rows=rows)
    if isinstance(rows, StartedRows):
        ctx.started_by_batch = rows.written_at
        return ctx
    ctx.lost_worker = not (ctx.state.get("parked") or ctx.state.get("handed_back_at"))
    if ctx.lost_worker and not pure_only:  # a batch logs it once the run is written
        log_lost_worker(execution_id)
    ctx.state.pop("parked", None)  # resumed: a later crash is a lost worker again
    _count_downtime(ctx)
    return ctx


def log_lost_worker(execution_id: Any) -> None:
    logger.warning(
        "execution %s lost its worker (its lease expired); resuming after its last recorded step",
        execution_id,
    )


def run_claimed(
    execution: Execution, *, owner: str, worker: Any = None, rows: list | None = None
) -> None:
    """Run an execution whose lease `owner` holds, to its end or its next stop."""
    execution_id = execution.pk
    if execution.status not in (Status.PENDING, Status.RUNNING):
        queue.release(execution_id, owner=owner, at=None)
        return
    ctx: RunContext | None = None
    try:
        _attach(execution)
        ctx = context_for(execution, owner=owner, worker=worker, rows=rows)
        output = execute(ctx)
        finish(ctx, output)
    except Park as park:
        try:
            assert ctx is not None
            ctx.flush()
            with transaction.atomic():
                park.apply()
        except (Cancelled, LeaseLost, GuardFailed, IllegalTransition):
            logger.info("execution %s stopped before it could park", execution_id)
            return
        if execution.status != Status.RUNNING:
            _log(execution, Status.RUNNING, execution.status, park.reason)
        else:
            logger.info("execution %s parked (%s)", execution_id, park.reason)
    except Cancelled:
        if ctx is not None:
            ctx.flush()
        logger.info("execution %s stopped: it was cancelled", execution_id)
    except LeaseLost:
        logger.warning("execution %s stopped: another worker took its lease", execution_id)
    except HandBack:
        hand_back(ctx, execution, owner)
    except ApprovalRejected as exc:
        fail(ctx, execution, f"rejected by a reviewer: {exc.refusal.get('reason') or 'no reason'}")
    except (StepFailed, BudgetExceeded) as exc:
        fail(ctx, execution, str(exc))
    except (OperationalError, InterfaceError) as exc:
        # The database is unreachable or its pool is exhausted: not the execution's fault.
        # Make it runnable again shortly; if even that fails the lease expires and any worker
        # claims it. Recorded steps are replayed, so nothing runs twice.
        logger.warning("execution %s paused by a database error (%s); retrying", execution_id, exc)
        _retry_later(execution_id, owner)
        if ctx is not None:
            ctx.lease_released = True
    except Exception as exc:
        logger.exception("execution %s crashed", execution_id)
        fail(ctx, execution, f"internal error: {type(exc).__name__}: {exc}")
    finally:
        if (ctx is None or not ctx.lease_released) and execution.status not in TERMINAL:
            queue.release(execution_id, owner=owner)


def _count_downtime(ctx: RunContext) -> None:
    """A run handed back at shutdown: the time until this claim is not running time."""
    handed_back_at = ctx.state.pop("handed_back_at", None)
    if handed_back_at:
        gap = (timezone.now() - datetime.fromisoformat(handed_back_at)).total_seconds()
        ctx.state["downtime_seconds"] = float(ctx.state.get("downtime_seconds") or 0) + gap


def hand_back(ctx: RunContext | None, execution: Execution, owner: str) -> None:
    """Shutdown: release the lease, runnable at once; recorded steps stay recorded."""
    fields: dict[str, Any] = {}
    if ctx is not None:
        ctx.flush()
        if execution.status == Status.RUNNING:
            state = dict(ctx.state)
            state["handed_back_at"] = timezone.now().isoformat()
            fields["state"] = state
    with transaction.atomic():
        queue.release(execution.pk, owner=owner, fields=fields)
    if ctx is not None:
        ctx.lease_released = True
    logger.info("execution %s handed back (worker shutting down)", execution.pk)


def _retry_later(execution_id: Any, owner: str, delay: float = 1.0) -> None:
    try:
        connection.close()
        with transaction.atomic():
            queue.release(execution_id, owner=owner, at=timezone.now() + timedelta(seconds=delay))
    except Exception:  # noqa: BLE001 - the lease expires and the run is claimable again
        logger.warning("execution %s: could not release; its lease will expire", execution_id)


def execute(ctx: RunContext) -> Any:
    agent_type = ctx.execution.agent.type
    if agent_type == AgentType.WORKFLOW:
        return workflow.run(ctx)
    if agent_type == AgentType.AGENT:
        return agent_loop.run_agent(ctx)
    if agent_type == AgentType.PYTHON:
        return python_runtime.run(ctx)
    raise StepFailed(f"agents of type {agent_type!r} are run outside Steward, not by the engine")


def _duration_ms(ctx: RunContext) -> int | None:
    started = ctx.execution.started_at
    if started is None:
        return None
    wall = (timezone.now() - started).total_seconds()
    return max(0, int((wall - float(ctx.state.get("downtime_seconds") or 0)) * 1000))


def finish(ctx: RunContext, output: Any) -> None:
    """The run's end, written with the records held back in one transaction."""
    execution = ctx.execution
    output = jsonable(output)
    if ctx.output_schema:
        found = violations(ctx.output_schema, output, prefix="output")
        if found:
            summary = "; ".join(f"{v['field']}: {v['message']}" for v in found[:5])
            raise StepFailed(f"output does not match output_schema: {summary}")
    ctx.flush()
    fields = {"output": output, "state": _final_state(ctx), **ctx.usage_fields()}
    duration = _duration_ms(ctx)
    if duration is not None:
        fields["duration_ms"] = duration
    done_output = output if isinstance(output, dict) else {"result": output}

    def then() -> None:
        ctx.emit("done", {"output": done_output, "token_usage": dict(ctx.tokens)})
        _wake_parent(execution)

    ctx.write([{"type": "finish", "to": Status.COMPLETED, "output": output}], fields, then=then)
    if ctx.collected is None:  # in a batch, the batch writes it and logs it
        ctx.lease_released = True
        _log(execution, Status.RUNNING, Status.COMPLETED, f"{execution.duration_ms} ms")


def fail(ctx: RunContext | None, execution: Execution, message: str) -> None:
    fields: dict[str, Any] = {"error": message[:10000]}
    entry = {"type": "error", "to": Status.FAILED, "message": message[:2000]}
    try:
        if ctx is None:
            with transaction.atomic():
                lifecycle.transition(
                    execution, Status.FAILED, type="error", message=entry["message"], fields=fields
                )
                _wake_parent(execution)
        else:
            ctx.flush()
            fields.update(ctx.usage_fields())
            fields["state"] = _final_state(ctx)
            duration = _duration_ms(ctx)
            if duration is not None:
                fields["duration_ms"] = duration

            def then() -> None:
                ctx.emit("error", {"message": message})
                _wake_parent(execution)

            ctx.write([entry], fields, then=then)
            ctx.lease_released = True
    except (GuardFailed, IllegalTransition, Cancelled, LeaseLost):
        logger.info("execution %s could not be failed (%s): it moved on", execution.pk, message)
        return
    _log(execution, Status.RUNNING, Status.FAILED, message[:200])


def _final_state(ctx: RunContext) -> dict[str, Any]:
    state = dict(ctx.state)
    state["active_seconds"] = round(ctx.active_seconds(), 3)
    state.pop("parked", None)
    return state


def _wake_parent(execution: Execution) -> None:
    """A child's end makes its parent (parked waiting for it) runnable, in the same commit."""
    if execution.parent_id is not None:
        queue.make_runnable(execution.parent_id)
