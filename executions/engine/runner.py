"""Runs one execution: claim the lease, replay what is recorded, run the rest, and end in one of
finished, failed, parked (approval / input / sleep / child) or handed back.

A lease is claimed with a compare-and-set on (lease_owner, lease_expires_at); the status only
ever changes through lifecycle.transition(). Every status change this module makes is logged on
one line (the worker's log).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db.models import Q
from django.utils import timezone

from executions import lifecycle
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
from executions.lifecycle import TERMINAL, GuardFailed, IllegalTransition, Status
from executions.models import AgentType, Execution
from executions.schemas import violations

logger = logging.getLogger("steward.worker")

# Binds the worker running on this thread (set by Worker before it calls the task).
_local = threading.local()
# Executions being run in this process: a duplicate task for one of them is dropped at once.
_active: set[str] = set()
_active_lock = threading.Lock()
_default_owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def bind(worker: Any) -> None:
    _local.worker = worker


def current_worker() -> Any:
    return getattr(_local, "worker", None)


def run(execution_id: Any) -> None:
    """The body of the `run_execution` task."""
    worker = current_worker()
    owner = worker.owner if worker is not None else _default_owner
    key = str(execution_id)
    with _active_lock:
        if key in _active:
            return
        _active.add(key)
    try:
        if not claim(key, owner):
            logger.debug("execution %s is held by another worker; skipping", key)
            return
        if worker is not None:
            worker.hold(key)
        try:
            _run_claimed(key, owner, worker)
        finally:
            if worker is not None:
                worker.unhold(key)
    finally:
        with _active_lock:
            _active.discard(key)


def claim(execution_id: str, owner: str) -> bool:
    """Take the lease if it is free, expired, or already ours (compare-and-set)."""
    now = timezone.now()
    return bool(
        Execution.objects.filter(pk=execution_id)
        .filter(Q(lease_owner="") | Q(lease_expires_at__lt=now) | Q(lease_owner=owner))
        .exclude(status__in=TERMINAL)
        .update(lease_owner=owner, lease_expires_at=now + timedelta(seconds=settings.LEASE_SECONDS))
    )


def release(execution_id: str, owner: str) -> None:
    Execution.objects.filter(pk=execution_id, lease_owner=owner).update(
        lease_owner="", lease_expires_at=None
    )


def _log(execution: Execution, src: str, to: str, extra: str = "") -> None:
    logger.info(
        "execution %s %s: %s -> %s%s",
        execution.pk,
        execution.agent.name,
        src,
        to,
        f" ({extra})" if extra else "",
    )


def _run_claimed(execution_id: str, owner: str, worker: Any) -> None:
    execution = (
        Execution.objects.select_related("agent", "agent_version").filter(pk=execution_id).first()
    )
    if execution is None:
        return
    if execution.status not in (Status.PENDING, Status.RUNNING):
        # A stale task (the execution is parked or finished): hand the lease straight back.
        release(execution_id, owner)
        return
    ctx: RunContext | None = None
    try:
        if execution.status == Status.PENDING:
            with transaction.atomic():
                lifecycle.transition(
                    execution, Status.RUNNING, type="start", guard={"lease_owner": owner}
                )
                ctx = RunContext(execution, owner=owner, worker=worker, fresh=True)
                ctx.emit("execution", {"execution_id": str(execution.pk), "user_message_id": ""})
            _log(execution, Status.PENDING, Status.RUNNING)
        else:
            ctx = RunContext(execution, owner=owner, worker=worker)
        output = execute(ctx)
        finish(ctx, output)
    except Park as park:
        try:
            with transaction.atomic():
                assert ctx is not None
                ctx.flush()
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
        from executions import tasks

        if ctx is not None:
            ctx.flush()
        with transaction.atomic():
            release(execution_id, owner)
            transaction.on_commit(lambda: tasks.enqueue_run(execution_id))
        logger.info("execution %s handed back (worker shutting down)", execution_id)
    except ApprovalRejected as exc:
        fail(ctx, execution, f"rejected by a reviewer: {exc.refusal.get('reason') or 'no reason'}")
    except (StepFailed, BudgetExceeded) as exc:
        fail(ctx, execution, str(exc))
    except (OperationalError, InterfaceError) as exc:
        # The database is unreachable or its pool is exhausted: not the execution's fault.
        # Queue the run again shortly; if even that fails the lease expires and the reaper
        # queues it. Recorded steps are replayed, so nothing runs twice.
        logger.warning("execution %s paused by a database error (%s); retrying", execution_id, exc)
        _retry_later(execution_id, owner)
        if ctx is not None:
            ctx.lease_released = True
    except Exception as exc:
        logger.exception("execution %s crashed", execution_id)
        fail(ctx, execution, f"internal error: {type(exc).__name__}: {exc}")
    finally:
        if (ctx is None or not ctx.lease_released) and execution.status not in TERMINAL:
            release(execution_id, owner)


def _retry_later(execution_id: str, owner: str, delay: float = 1.0) -> None:
    from executions import tasks

    try:
        from django.db import connection

        connection.close()
        with transaction.atomic():
            release(execution_id, owner)
            run_after = timezone.now() + timedelta(seconds=delay)
            transaction.on_commit(lambda: tasks.enqueue_run(execution_id, run_after=run_after))
    except Exception:  # noqa: BLE001 - the lease will expire and the reaper will requeue it
        logger.warning("execution %s: could not requeue; the reaper will", execution_id)


def execute(ctx: RunContext) -> Any:
    agent_type = ctx.execution.agent.type
    if agent_type == AgentType.WORKFLOW:
        from executions.engine import workflow

        return workflow.run(ctx)
    if agent_type == AgentType.AGENT:
        from executions.engine import agent_loop

        return agent_loop.run_agent(ctx)
    if agent_type == AgentType.PYTHON:
        from executions.engine import python_runtime

        return python_runtime.run(ctx)
    raise StepFailed(f"agents of type {agent_type!r} are run outside Steward, not by the engine")


def finish(ctx: RunContext, output: Any) -> None:
    execution = ctx.execution
    output = jsonable(output)
    if ctx.output_schema:
        found = violations(ctx.output_schema, output, prefix="output")
        if found:
            summary = "; ".join(f"{v['field']}: {v['message']}" for v in found[:5])
            raise StepFailed(f"output does not match output_schema: {summary}")
    with transaction.atomic():
        ctx.flush()
        try:
            lifecycle.transition(
                execution,
                Status.COMPLETED,
                type="finish",
                guard=ctx.guard,
                output=output,
                fields={"output": output, "state": _final_state(ctx), **ctx.usage_fields()},
            )
        except (GuardFailed, IllegalTransition):
            raise ctx.stopped_writing() from None
        done_output = output if isinstance(output, dict) else {"result": output}
        ctx.emit("done", {"output": done_output, "token_usage": dict(ctx.tokens)})
        _wake_parent(execution)
    ctx.lease_released = True
    _log(execution, Status.RUNNING, Status.COMPLETED, f"{execution.duration_ms} ms")


def fail(ctx: RunContext | None, execution: Execution, message: str) -> None:
    fields: dict[str, Any] = {"error": message[:10000]}
    if ctx is not None:
        fields.update(ctx.usage_fields())
        fields["state"] = _final_state(ctx)
    guard = ctx.guard if ctx is not None else {}
    try:
        with transaction.atomic():
            if ctx is not None:
                ctx.flush()
            lifecycle.transition(
                execution,
                Status.FAILED,
                type="error",
                guard=guard,
                message=message[:2000],
                fields=fields,
            )
            if ctx is not None:
                ctx.emit("error", {"message": message})
            _wake_parent(execution)
    except (GuardFailed, IllegalTransition):
        logger.info("execution %s could not be failed (%s): it moved on", execution.pk, message)
        return
    if ctx is not None:
        ctx.lease_released = True
    _log(execution, Status.RUNNING, Status.FAILED, message[:200])


def _final_state(ctx: RunContext) -> dict[str, Any]:
    state = dict(ctx.state)
    state["active_seconds"] = round(ctx.active_seconds(), 3)
    state.pop("parked", None)
    return state


def _wake_parent(execution: Execution) -> None:
    """A child's end queues its parent, which is parked waiting for it."""
    if execution.parent_id is None:
        return
    from executions import tasks

    parent_id = execution.parent_id
    transaction.on_commit(lambda: tasks.enqueue_run(parent_id))
