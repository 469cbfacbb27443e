"""Writes for executions: start (idempotent), cancel, resume, retry. Status changes go through
executions.lifecycle, the one writer of Execution.status."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from executions import bulk, lifecycle, tasks
from executions.errors import Conflict, ValidationFailed, field_error
from executions.lifecycle import ACTIVE, PARKED, TERMINAL, Actor, Status
from executions.models import (
    Agent,
    AgentType,
    AgentVersion,
    Execution,
    Workspace,
    new_id,
)
from executions.schemas import validate

logger = logging.getLogger("steward.executions")


def _request_hash(**parts: Any) -> str:
    canonical = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def execution_start(
    *,
    workspace: Workspace,
    agent: Agent,
    input: Any = None,
    metadata: dict | None = None,
    session_id: str | None = None,
    version: AgentVersion | None = None,
    idempotency_key: str | None = None,
    actor: Actor = lifecycle.SYSTEM,
    parent: Execution | None = None,
    retry_of: Execution | None = None,
) -> tuple[Execution, bool]:
    """Create an execution (validated against the version's input schema) and enqueue it.

    Returns (execution, created). A repeat with the same idempotency key and body returns the
    first execution; the same key with another body is a Conflict.
    """
    execution = execution_new(
        workspace=workspace,
        agent=agent,
        input=input,
        metadata=metadata,
        session_id=session_id,
        version=version,
        idempotency_key=idempotency_key,
        actor=actor,
        parent=parent,
        retry_of=retry_of,
    )
    if idempotency_key:
        existing = Execution.objects.filter(
            workspace=workspace, idempotency_key=idempotency_key
        ).first()
        if existing is not None:
            return _idempotent_replay(existing, execution.request_hash), False
    try:
        _insert_start(execution, actor=actor, wake=agent.type != AgentType.EXTERNAL)
    except IntegrityError:
        # Lost a race with an identical idempotent request: answer with the winner.
        existing = Execution.objects.filter(
            workspace=workspace, idempotency_key=idempotency_key
        ).first()
        if existing is None:
            raise
        return _idempotent_replay(existing, execution.request_hash), False
    return execution, True


def _insert_start(execution: Execution, *, actor: Actor, wake: bool) -> None:
    """Write a start and, once it is committed, wake the workers, then publish its event.

    PostgreSQL outside a transaction: the row and its `init` entry are ONE autocommitted
    statement (bulk.insert_pair), so the start costs one round trip and its flushed commit,
    not BEGIN + INSERT + COMMIT (an idle run's latency, docs/performance-history.md "Engine"); the
    lifecycle's own start entry and after-commit step, as the event-loop start uses them.
    Inside a caller's transaction (or on SQLite): lifecycle.record_start, hooks on commit.
    Either way the wake-up goes first: the workers need the row, a watcher only its event."""
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        step = lifecycle.start_entry(execution, actor=actor, input=execution.input)
        bulk.insert_pair(execution, step)  # one statement: one implicit transaction
        if wake:
            tasks.enqueue_run(execution.pk, fresh=execution)
        lifecycle.start_committed(execution, step)
        return
    with transaction.atomic():
        if wake:
            execution_id = execution.pk
            transaction.on_commit(lambda: tasks.enqueue_run(execution_id))
        # The row and its `init` entry in two INSERTs (no savepoint, no UPDATE).
        lifecycle.record_start(execution, actor=actor, input=execution.input)


def execution_new(
    *,
    workspace: Workspace,
    agent: Agent,
    input: Any = None,
    metadata: dict | None = None,
    session_id: str | None = None,
    version: AgentVersion | None = None,
    idempotency_key: str | None = None,
    actor: Actor = lifecycle.SYSTEM,
    parent: Execution | None = None,
    retry_of: Execution | None = None,
) -> Execution:
    """A start's new row, validated and unsaved (no query): execution_start's checks, shared
    with the starts written on the event loop (services/loopstarts.py)."""
    input = {} if input is None else input
    metadata = metadata or {}
    if not isinstance(metadata, dict):
        raise ValidationFailed(
            "metadata must be an object", details=[field_error("metadata", "must be an object")]
        )
    if version is None:
        version = agent.current_version
    if version is None and agent.type not in {AgentType.EXTERNAL, AgentType.PYTHON}:
        raise ValidationFailed(
            f"agent {agent.name!r} has no version to run; create one first",
            details=[field_error("version_id", "the agent has no current version")],
        )
    if version is not None and version.agent_id != agent.pk:
        raise ValidationFailed(
            "version_id does not belong to this agent",
            details=[field_error("version_id", "does not belong to this agent")],
        )
    schema = version.input_schema if version else None
    validate(schema, input, prefix="input", what="input")

    request_hash = _request_hash(
        agent=str(agent.pk),
        version=str(version.pk) if version else None,
        input=input,
        metadata=metadata,
        session_id=session_id or "",
    )
    execution_id = new_id()
    return Execution(
        id=execution_id,
        trace_id=execution_id.hex,
        workspace=workspace,
        agent=agent,
        agent_version=version,
        parent=parent,
        retry_of=retry_of,
        session_id=session_id or "",
        input=input,
        metadata=metadata,
        idempotency_key=idempotency_key or None,
        request_hash=request_hash,
        created_by_user_id=actor.user_id,
        created_by_key_id=actor.key_id,
        # An external system runs these and reports back: no worker ever claims them.
        runnable_at=None if agent.type == AgentType.EXTERNAL else timezone.now(),
    )


def execution_start_child(
    *, parent: Execution, workflow: str, arguments: Any, step_path: str
) -> Execution:
    """A child execution for a parent's `yield` step, created inside the engine's transaction
    that parks the parent. Its input follows the sub-workflow, not the version's input_schema,
    so it is not validated like execution_start's; it shares the parent's trace and session."""
    child = Execution.objects.create(
        id=new_id(),
        trace_id=parent.trace_id or parent.pk.hex,
        workspace_id=parent.workspace_id,
        agent_id=parent.agent_id,
        agent_version_id=parent.agent_version_id,
        parent=parent,
        session_id=parent.session_id,
        input=arguments,
        metadata={"workflow": workflow, "parent_step": step_path},
        created_by_user_id=parent.created_by_user_id,
        created_by_key_id=parent.created_by_key_id,
    )
    lifecycle.record(child, type="init", input=child.input)
    child_id = child.pk
    transaction.on_commit(lambda: tasks.enqueue_run(child_id))
    return child


def _idempotent_replay(existing: Execution, request_hash: str) -> Execution:
    if existing.request_hash != request_hash:
        raise Conflict(
            "this Idempotency-Key was already used with a different request body",
            code="idempotency_conflict",
            details={"execution_id": str(existing.pk)},
        )
    return existing


def execution_cancel(*, execution: Execution, actor: Actor, reason: str = "") -> Execution:
    """Cancel now. A running execution stops at its next checkpoint (between steps or chunks):
    the worker sees the terminal status and closes its provider call."""
    if execution.status in TERMINAL:
        raise lifecycle.IllegalTransition(
            execution.pk,
            execution.status,
            Status.CANCELLED,
            f"execution is already {execution.status}; only unfinished executions can be cancelled",
        )
    with transaction.atomic():
        lifecycle.transition(
            execution,
            Status.CANCELLED,
            type="cancelled",
            actor=actor,
            message=reason or f"cancelled by {actor.label}",
            fields={"cancel_requested_at": timezone.now()},
        )
    for child in execution.children.filter(status__in=ACTIVE):
        with contextlib.suppress(lifecycle.IllegalTransition):  # it finished meanwhile
            execution_cancel(execution=child, actor=actor, reason="parent cancelled")
    return execution


def execution_resume(*, execution: Execution, input: Any, actor: Actor) -> Execution:
    """Answer a `wait_for_input` step: the input becomes the step's output and the run goes on."""
    if execution.status != Status.AWAITING_INPUT:
        raise lifecycle.IllegalTransition(
            execution.pk,
            execution.status,
            Status.RUNNING,
            f"execution is {execution.status}; only an execution awaiting input can be resumed",
        )
    waiting = (execution.state or {}).get("waiting") or {}
    validate(waiting.get("schema"), input, prefix="input", what="input")
    state = dict(execution.state or {})
    state["resume_input"] = input
    with transaction.atomic():
        lifecycle.transition(
            execution,
            Status.RUNNING,
            type="resume",
            actor=actor,
            input=input,
            step_path=waiting.get("path", ""),
            fields={"state": state},
        )
        execution_id = execution.pk
        transaction.on_commit(lambda: tasks.enqueue_run(execution_id))
    return execution


def execution_retry(*, execution: Execution, actor: Actor) -> Execution:
    """A new execution with the same input and version, linked to the original."""
    if execution.status not in TERMINAL:
        raise Conflict(
            f"execution is {execution.status}; only finished executions can be retried",
            details={"status": execution.status},
        )
    retried, _ = execution_start(
        workspace=execution.workspace,
        agent=execution.agent,
        input=execution.input,
        metadata={**(execution.metadata or {}), "retry_of": str(execution.pk)},
        session_id=execution.session_id,
        version=execution.agent_version,
        actor=actor,
        retry_of=execution,
    )
    return retried


def execution_is_parked(execution: Execution) -> bool:
    return execution.status in PARKED
