"""Starts written on the API's event loop (executions/api/loopcreate.py), on PostgreSQL: many
creates' rows and `init` entries in ONE statement, committed before any of them is answered.

execution_start's common case: `loop_start_new` builds and checks a start (no query; the same
execution_new and `init` entry as the full path), `loop_starts_insert` writes a batch of them
on an autocommit async psycopg connection. The creates waiting while a statement runs go in
the next one together (loopcreate.StartBatches): PostgreSQL opens the two tables and their ~30
indexes, plans, commits and flushes once per batch instead of once per create, and psycopg
runs one statement (docs/performance-history.md, "Create tail").

Each start's agent (with its current version) comes from the caller's cache: a row is inserted
only if its agent is still live in the workspace with the same type, current version (and
name, when it was named), so a stale cache cannot start a run the full path would refuse. A
start whose guard fails, or whose Idempotency-Key is taken (ON CONFLICT DO NOTHING, also by
another start of the same batch), is not written and answered False: the caller goes the full
way, which answers the replay, the 404 or the conflict. A statement the server refuses writes
nothing (one transaction); a statement the connection lost may have committed (StartUnknown).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import psycopg
from django.db import close_old_connections

from executions import bulk, lifecycle, tasks
from executions.lifecycle import Actor
from executions.models import Agent, AgentType, Execution, Transition, Workspace
from executions.services.executions import execution_new

logger = logging.getLogger("steward.executions")


class StartUnknown(Exception):
    """loop_starts_insert lost the database mid-statement: the starts may have committed."""


@dataclass
class LoopStart:
    """A checked, unsaved start: its row, its `init` entry, what its agent must still be."""

    execution: Execution
    step: Transition
    guard: list  # agent id, workspace id, type, current version id, name (None: by id)
    wake: bool  # a worker runs it (not an external agent's)


def loop_start_new(
    *,
    workspace: Workspace,
    agent: Agent,
    by_name: bool,
    input: Any,
    metadata: dict | None,
    session_id: str | None,
    idempotency_key: str | None,
    actor: Actor,
) -> LoopStart:
    """execution_start's checks and row (validation errors raise here, before anything is
    sent), for an agent taken from the caller's cache."""
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
    guard = [agent.pk, workspace.pk, agent.type, agent.current_version_id]
    guard.append(agent.name if by_name else None)
    return LoopStart(execution, step, guard, wake=agent.type != AgentType.EXTERNAL)


async def loop_starts_insert(conn: Any, db: Any, starts: list[LoopStart]) -> list[bool]:
    """Write `starts` in one statement on `conn` (autocommit; `db` a Django connection wrapper
    that never connects, for the columns' adapters): whether each was written. Written ones
    are committed (and flushed) when this returns; their live events, listeners and wake-up
    follow on the executor (`_after_commit`)."""
    sql, (guard, e_fields, t_fields) = _starts_sql(db, len(starts))
    params: list[Any] = []
    for start in starts:
        params += [f.get_db_prep_value(v, db) for f, v in zip(guard, start.guard, strict=True)]
        execution = start.execution
        params += [f.get_db_prep_save(f.pre_save(execution, True), db) for f in e_fields]
    for start in starts:
        step = start.step
        params += [f.get_db_prep_save(f.pre_save(step, True), db) for f in t_fields]
    try:
        # A raw cursor: the statement is written with $n already. psycopg converts `%s` per
        # call, uncached past 50 parameters (a sixth of a create's Python on the loop).
        async with psycopg.AsyncRawCursor(conn) as cursor:
            await cursor.execute(sql, params, prepare=True)
            rows = await cursor.fetchall()
    except psycopg.Error as exc:
        if exc.sqlstate is None:  # no answer from the server: committed or not, unknown
            raise StartUnknown(str(exc)) from exc
        raise  # the server refused the statement: nothing was written
    written = {execution_id: step_id for step_id, execution_id in rows}
    done = []
    for start in starts:
        step_id = written.get(start.execution.pk)
        done.append(step_id is not None)
        if step_id is None:
            continue
        start.step.pk = step_id
        for obj in (start.execution, start.step):
            obj._state.adding = False
            obj._state.db = db.alias
        # The live event, the listeners (which may query) and the wake-up (which may
        # PUBLISH inline): what the full path runs on commit, on a thread, not on the loop.
        _after_commit(start.execution, start.step, wake=start.wake)
    return done


_sql_cache: dict[tuple[str, int], tuple[str, tuple]] = {}


def _starts_sql(db: Any, count: int) -> tuple[str, tuple]:
    """loop_starts_insert's statement for `count` starts (compiled once per database and
    count, with psycopg's raw `$n` placeholders) and the fields whose values fill each row:
    the agent guard's and the execution's columns (a row each), then the entries' columns.

    `WITH _in (guard…, columns…) AS (VALUES …), _row AS (INSERT INTO execution SELECT columns
    FROM _in JOIN agent ON the guard ON CONFLICT DO NOTHING RETURNING id) INSERT INTO
    transition SELECT … FROM (VALUES …) JOIN _row ON its execution RETURNING id, execution`."""
    cached = _sql_cache.get((db.vendor, count))
    if cached is not None:
        return cached
    quote = db.ops.quote_name
    agent = Agent._meta
    guard = [agent.pk, agent.get_field("workspace"), agent.get_field("type")]
    guard += [agent.get_field("current_version"), agent.get_field("name")]
    on = (
        f"a.{quote(guard[0].column)} = g0 AND a.{quote(guard[1].column)} = g1 "
        f"AND a.{quote('deleted_at')} IS NULL AND a.{quote(guard[2].column)} = g2 "
        f"AND a.{quote(guard[3].column)} IS NOT DISTINCT FROM g3 "
        f"AND (g4 IS NULL OR a.{quote(guard[4].column)} = g4)"
    )

    def concrete(model) -> list:
        meta = model._meta
        return [f for f in meta.local_concrete_fields if f is not meta.auto_field]

    e_fields, t_fields = concrete(Execution), concrete(Transition)
    rows, _ = bulk.values_sql([*guard, *e_fields], [[]] * count, prepared=True)
    entries, _ = bulk.values_sql(t_fields, [[]] * count, prepared=True)
    e_cols = ", ".join(f"c{i}" for i in range(len(e_fields)))
    t_cols = ", ".join(f"t{i}" for i in range(len(t_fields)))
    execution_id = t_fields.index(Transition._meta.get_field("execution"))
    pk = quote(Execution._meta.pk.column)
    sql = (
        f"WITH _in (g0, g1, g2, g3, g4, {e_cols}) AS {rows}, "
        f"_row AS (INSERT INTO {quote(Execution._meta.db_table)} "
        f"({', '.join(quote(f.column) for f in e_fields)}) "
        f"SELECT {e_cols} FROM _in JOIN {quote(agent.db_table)} a ON {on} "
        f"ON CONFLICT DO NOTHING RETURNING {pk}) "
        f"INSERT INTO {quote(Transition._meta.db_table)} "
        f"({', '.join(quote(f.column) for f in t_fields)}) "
        f"SELECT {t_cols} FROM {entries} AS _t ({t_cols}) "
        f"JOIN _row ON _row.{pk} = _t.t{execution_id} "
        f"RETURNING {quote(Transition._meta.pk.column)}, "
        f"{quote(Transition._meta.get_field('execution').column)}"
    )
    numbers = iter(range(1, sql.count("%s") + 1))
    sql = re.sub("%s", lambda _: f"${next(numbers)}", sql)
    cached = _sql_cache[(db.vendor, count)] = (sql, (guard, e_fields, t_fields))
    return cached


# Starts committed on the loop whose after-commit work is still to do, and whether a drain is
# running on the loop's executor. A hand-over to the executor per start (a future, a queue put
# waking a thread, the thread taking the GIL) was ~11 % of a web worker's GIL-held samples
# under wrk's creates, and the thread's run ~7 % more (docs/performance-history.md, "Create tail").
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
    then the starts' live events, in one hand-over (one Redis pipeline), and listeners."""
    woken = [execution for execution, _, wake in batch if wake]
    try:
        if woken:
            # A lone start's row rides with its wake-up (engine/tokens.py); a batch's wakes.
            tasks.enqueue_run(woken[-1].pk, fresh=woken[0] if len(woken) == 1 else None)
    except Exception:  # best effort, as on commit: the runs are in the database
        logger.exception("waking the workers for execution %s", woken[-1].pk)
    try:
        lifecycle.starts_committed([(execution, step) for execution, step, _ in batch])
    except Exception:  # best effort, as on commit: the runs are in the database
        logger.exception("after starting executions %s", [str(e.pk) for e, _, _ in batch])
