"""Writes for executions: start (idempotent), cancel, resume, retry. Status changes go through
executions.lifecycle, the one writer of Execution.status."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections import deque
from typing import Any

import psycopg
from django.db import IntegrityError, close_old_connections, connection, transaction
from django.utils import timezone

from executions import bulk, lifecycle, tasks
from executions.errors import Conflict, ValidationFailed, field_error
from executions.lifecycle import ACTIVE, PARKED, TERMINAL, Actor, Status
from executions.models import (
    Agent,
    AgentType,
    AgentVersion,
    Execution,
    Transition,
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
    not BEGIN + INSERT + COMMIT (an idle run's latency, docs/performance.md "Engine"); the
    lifecycle's own start entry and after-commit step, as the event-loop start uses them.
    Inside a caller's transaction (or on SQLite): lifecycle.record_start, hooks on commit.
    Either way the wake-up goes first: the workers need the row, a watcher only its event."""
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        step = lifecycle.start_entry(execution, actor=actor, input=execution.input)
        bulk.insert_pair(execution, step)  # one statement: one implicit transaction
        if wake:
            tasks.enqueue_run(execution.pk)
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
    with the start written on the event loop (execution_start_on)."""
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


async def execution_start_on(
    conn: Any,
    db: Any,
    *,
    workspace: Workspace,
    agent: Agent,
    by_name: bool,
    input: Any,
    metadata: dict | None,
    session_id: str | None,
    idempotency_key: str | None,
    actor: Actor,
) -> Execution | None:
    """execution_start's common case as ONE statement on an autocommit async psycopg
    connection (`conn`; `db` a Django connection wrapper that never connects, for the
    columns' adapters), for the API's event loop (executions/api/loopcreate.py).

    `agent` (with its current version) comes from the caller's cache: the statement inserts
    only if the agent is still live in the workspace with the same type, current version
    (and name, when it was named), so a stale cache cannot start a run the full path would
    refuse. The row and its `init` entry are one statement, hence one transaction, committed
    (and flushed) before this returns. Returns None, having written nothing, when the guard
    fails or the Idempotency-Key is taken (ON CONFLICT DO NOTHING): the caller then goes the
    full way, which answers the replay, the 404 or the conflict. Validation errors raise
    before anything is sent."""
    execution = execution_new(
        workspace=workspace,
        agent=agent,
        input=input,
        metadata=metadata,
        session_id=session_id,
        idempotency_key=idempotency_key,
        actor=actor,
    )
    step = lifecycle.start_entry(execution, actor=actor, input=execution.input)
    sql, fields = _start_sql(db, by_name)
    version_id = agent.current_version_id
    guard = [agent.pk, workspace.pk, agent.type, version_id, *([agent.name] if by_name else [])]
    params = [
        *(f.get_db_prep_value(v, db) for f, v in zip(fields[0], guard, strict=True)),
        *(f.get_db_prep_save(f.pre_save(execution, True), db) for f in fields[1]),
        *(f.get_db_prep_save(f.pre_save(step, True), db) for f in fields[2]),
    ]
    try:
        # A raw cursor: the statement is written with $n already. psycopg converts `%s` per
        # call, uncached past 50 parameters (a sixth of a create's Python on the loop).
        async with psycopg.AsyncRawCursor(conn) as cursor:
            await cursor.execute(sql, params, prepare=True)
            row = await cursor.fetchone()
    except psycopg.Error as exc:
        if exc.sqlstate is None:  # no answer from the server: committed or not, unknown
            raise StartUnknown(str(exc)) from exc
        raise  # the server refused the statement: nothing was written
    if row is None:
        return None
    step.pk = row[0]
    for obj in (execution, step):
        obj._state.adding = False
        obj._state.db = db.alias
    # The live event, the listeners (which may query) and the wake-up (which may PUBLISH
    # inline): what the full path runs on commit, on a thread, not on the loop.
    _after_commit(execution, step, wake=agent.type != AgentType.EXTERNAL)
    return execution


# Starts committed on the loop whose after-commit work is still to do, and whether a drain is
# running on the loop's executor. A hand-over to the executor per start (a future, a queue put
# waking a thread, the thread taking the GIL) was ~11 % of a web worker's GIL-held samples
# under wrk's creates, and the thread's run ~7 % more (docs/performance.md, "Create tail").
# A drain lingers LINGER_POLLS x LINGER_SECONDS after its last batch, taking the starts that
# arrive meanwhile without a hand-over: under load the loop hands over almost nothing and a
# start's event waits at most LINGER_SECONDS; the first start after a quiet spell goes at once.
LINGER_SECONDS = 0.002
LINGER_POLLS = 3
_committed: deque[tuple[Execution, Any, bool]] = deque()
_committed_lock = threading.Lock()
_draining = False


def _after_commit(execution: Execution, step: Any, *, wake: bool) -> None:
    global _draining
    with _committed_lock:
        _committed.append((execution, step, wake))
        if _draining:
            return
        _draining = True
    # The default executor: asyncio.run (the tests) and uvicorn's shutdown wait for it, so no
    # committed start's event is lost when the loop ends.
    asyncio.get_running_loop().run_in_executor(None, _drain_committed)


def _drain_committed() -> None:
    global _draining
    quiet = 0
    try:
        while True:
            with _committed_lock:
                batch = list(_committed)
                _committed.clear()
                if not batch and quiet >= LINGER_POLLS:
                    _draining = False
                    return
            if batch:
                _started(batch)
                quiet = 0
            else:
                quiet += 1
                time.sleep(LINGER_SECONDS)
    except BaseException:
        with _committed_lock:
            _draining = False  # the next start begins a new drain
        raise
    finally:
        close_old_connections()  # a listener's query: the connection back, as after a request


def _started(batch: list[tuple[Execution, Any, bool]]) -> None:
    """What the full path runs on commit, for starts committed on the loop: the workers woken
    first (they need the rows; ONE wake-up covers every run of the batch, all committed),
    then each start's live event and listeners."""
    woken = [execution.pk for execution, _, wake in batch if wake]
    try:
        if woken:
            tasks.enqueue_run(woken[-1])
    except Exception:  # best effort, as on commit: the runs are in the database
        logger.exception("waking the workers for execution %s", woken[-1])
    for execution, step, _ in batch:
        try:
            lifecycle.start_committed(execution, step)
        except Exception:  # best effort, as on commit: the run is in the database
            logger.exception("after starting execution %s", execution.pk)


class StartUnknown(Exception):
    """execution_start_on lost the database mid-statement: the start may have committed."""


_start_cache: dict[tuple[str, bool], tuple[str, tuple]] = {}


def _start_sql(db: Any, by_name: bool) -> tuple[str, tuple]:
    """execution_start_on's statement (compiled once per database and guard, with psycopg's
    raw `$n` placeholders) and the fields whose values fill it: the agent guard's, the
    execution's columns, the entry's columns."""
    cached = _start_cache.get((db.vendor, by_name))
    if cached is not None:
        return cached
    quote = db.ops.quote_name
    agent = Agent._meta
    guard = [agent.pk, agent.get_field("workspace"), agent.get_field("type")]
    guard.append(agent.get_field("current_version"))
    where = (
        f"{quote(guard[0].column)} = %s AND {quote(guard[1].column)} = %s "
        f"AND {quote('deleted_at')} IS NULL AND {quote(guard[2].column)} = %s "
        f"AND {quote(guard[3].column)} IS NOT DISTINCT FROM %s"
    )
    if by_name:
        guard.append(agent.get_field("name"))
        where += f" AND {quote(guard[4].column)} = %s"

    def columns(model) -> tuple[list, str, str]:
        meta = model._meta
        fields = [f for f in meta.local_concrete_fields if f is not meta.auto_field]
        names = ", ".join(quote(f.column) for f in fields)
        return (
            fields,
            f"INSERT INTO {quote(meta.db_table)} ({names})",
            ", ".join(["%s"] * len(fields)),
        )

    e_fields, e_insert, e_values = columns(Execution)
    t_fields, t_insert, t_values = columns(Transition)
    sql = (
        f"WITH _agent AS (SELECT 1 FROM {quote(agent.db_table)} WHERE {where}), "
        f"_row AS ({e_insert} SELECT {e_values} FROM _agent ON CONFLICT DO NOTHING RETURNING 1) "
        f"{t_insert} SELECT {t_values} FROM _row RETURNING {quote(Transition._meta.pk.column)}"
    )
    numbers = iter(range(1, sql.count("%s") + 1))
    sql = re.sub("%s", lambda _: f"${next(numbers)}", sql)
    cached = _start_cache[(db.vendor, by_name)] = (sql, (guard, e_fields, t_fields))
    return cached


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
