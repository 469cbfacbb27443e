"""The durable run context: every step goes through `RunContext.step()`, which replays a step
already recorded (by step path) and otherwise runs it and records it before returning.

Why this makes runs durable: a re-run (after a checkpoint, a crash or a lost lease) walks the
same definition from the top; each step path found in the history returns its recorded output
without running again, so no recorded model call or tool call is ever repeated, and the run
continues with the first step that has no record.

Writes are guarded by the lease: every record is a compare-and-set that also requires
`lease_owner` to be this worker, so a worker that lost its lease (paused, partitioned) cannot
write a step that another worker is already running.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from executions import lifecycle
from executions.live import events
from executions.engine import checkpoints, pricing, providers
from executions.engine import tools as tool_registry
from executions.lifecycle import TERMINAL, GuardFailed, IllegalTransition, Status
from executions.models import Execution, ExecutionEvent, Transition

logger = logging.getLogger("steward.worker")

# Sleeps shorter than this run inline; longer ones park the execution and free the worker.
INLINE_SLEEP_SECONDS = 0.5
# How often (at most) a running step re-reads the row to notice a cancel or a lost lease.
CANCEL_POLL_SECONDS = 0.25
# Streamed deltas are coalesced into one stored event at most this often.
DELTA_FLUSH_SECONDS = 0.05


class EngineStop(BaseException):
    """Control flow of the engine. A BaseException so an agent's `except Exception` cannot
    swallow a park, a cancel or a budget stop."""


class Park(EngineStop):
    """Unwinds to the runner, which parks the execution by calling `apply()` in a transaction."""

    def __init__(self, reason: str, apply: Callable[[], None]) -> None:
        super().__init__(reason)
        self.reason = reason
        self.apply = apply


class Cancelled(EngineStop):
    """The execution reached a terminal status under us (cancelled by someone)."""


class LeaseLost(EngineStop):
    """Another worker holds the execution now; stop without writing."""


class HandBack(EngineStop):
    """The worker is shutting down: release the lease and queue the run again."""


class BudgetExceeded(EngineStop):
    """A budget of the version ran out; the execution fails with a message naming it."""

    def __init__(self, budget: str, limit: Any, used: Any) -> None:
        super().__init__(f"budget exceeded: {budget} ({limit}); used {used}")
        self.budget = budget


class StepFailed(Exception):
    """Fail the execution with this message (a permanent, readable error)."""


class ApprovalRejected(Exception):
    """Raised by a Python agent's `ctx.approval()` when a reviewer rejected (on_reject="raise")."""

    def __init__(self, refusal: dict[str, Any]) -> None:
        super().__init__(f"rejected: {refusal.get('reason') or 'no reason given'}")
        self.refusal = refusal


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


def jsonable(value: Any) -> Any:
    """The value as it will read back from the database, so a live run and a replay agree."""

    def default(obj: Any) -> Any:
        if isinstance(obj, Decimal):
            return float(obj)
        if isinstance(obj, (set, frozenset, tuple)):
            return list(obj)
        return str(obj)

    return json.loads(json.dumps(value, default=default))


def loop_binding() -> Callable[[], None]:
    """An initializer that gives a new thread this thread's asgiref main loop.

    In the embedded topology the worker runs under the server's loop; `async_to_sync(group_send)`
    must route back to that loop (the in-memory channel layer lives there), and asgiref finds it
    through a thread-local, which new threads do not inherit.
    """
    from asgiref.sync import SyncToAsync

    loop = getattr(SyncToAsync.threadlocal, "main_event_loop", None)
    pid = getattr(SyncToAsync.threadlocal, "main_event_loop_pid", None)

    def bind() -> None:
        if loop is not None:
            SyncToAsync.threadlocal.main_event_loop = loop
            SyncToAsync.threadlocal.main_event_loop_pid = pid

    return bind


class StopSignal:
    """`should_stop` for a provider call: callable between chunks, and a place to register the
    stream's `close` so the watchdog can end a call that is blocked waiting for bytes."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._closers: list[Callable[[], Any]] = []

    def __call__(self) -> bool:
        return self.ctx.should_stop()

    def register(self, closer: Callable[[], Any]) -> None:
        self._closers.append(closer)

    def trip(self) -> None:
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:  # noqa: BLE001 - closing a half-dead stream may itself fail
                logger.debug("closing a provider stream failed", exc_info=True)


def release_db_connection() -> None:
    """Hand this thread's database connection back to the pool before a long wait (a model or
    tool call), so N executions waiting on I/O do not hold N connections. Only with a pool:
    without one, closing would just cost a reconnect."""
    from django.db import connection

    if connection.in_atomic_block or not connection.settings_dict.get("OPTIONS", {}).get("pool"):
        return
    connection.close()


def _serial_db() -> bool:
    """Branches run one after another when threads cannot share the database: inside a
    transaction (other connections cannot see its rows), or on in-memory SQLite (the test
    default), whose shared-cache table locks fail instead of waiting."""
    from django.db import connection

    if connection.in_atomic_block:
        return True
    return connection.vendor == "sqlite" and connection.is_in_memory_db()


class RunContext:
    def __init__(
        self, execution: Execution, *, owner: str, worker: Any = None, fresh: bool = False
    ) -> None:
        self.execution = execution
        self.owner = owner
        self.worker = worker
        version = execution.agent_version
        self.config: dict[str, Any] = dict(version.config or {}) if version else {}
        self.output_schema = version.output_schema if version else None
        limits = self.config.get("limits") or self.config.get("run_budget") or {}
        self.limits: dict[str, Any] = limits if isinstance(limits, dict) else {}
        self.state: dict[str, Any] = dict(execution.state or {})
        self.started = time.monotonic()
        self.active_before = float(self.state.get("active_seconds") or 0.0)
        self.lease_released = False
        self._lock = threading.RLock()
        self._last_poll = time.monotonic()
        self._stop_reason: str | None = None
        self._step_deadline: float | None = None
        self._buffer: list[str] = []
        self._buffer_kind: str | None = None
        self._buffer_since = 0.0
        self._bind_thread = loop_binding()
        self.recorded: dict[str, Recorded] = {}
        self.tokens = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
        self.cost_unknown = False
        self.cost = Decimal(0)
        self.steps_done = 0
        # A fresh run (it was pending a moment ago) has no recorded steps to replay.
        recorded = (
            []
            if fresh
            else Transition.objects.filter(execution_id=execution.pk, type="step").values(
                "step_path", "step_kind", "output", "usage", "cost"
            )
        )
        for row in recorded:
            self.recorded[row["step_path"]] = Recorded(
                row["output"], row["step_kind"], row["usage"], row["cost"]
            )
            self._count(row["usage"], row["cost"])
            self.steps_done += 1

    # --- bookkeeping ---------------------------------------------------------------------

    def _count(self, usage: dict[str, Any] | None, cost: Decimal | None) -> None:
        if not usage:
            return
        for key in ("prompt_tokens", "completion_tokens"):
            self.tokens[key] += int(usage.get(key) or 0)
        self.tokens["total_tokens"] = (
            self.tokens["prompt_tokens"] + self.tokens["completion_tokens"]
        )
        if cost is None:
            self.cost_unknown = True
        else:
            self.cost += Decimal(cost)

    @property
    def total_cost(self) -> Decimal | None:
        return None if self.cost_unknown else self.cost

    def usage_fields(self) -> dict[str, Any]:
        return {"token_usage": dict(self.tokens), "cost": self.total_cost}

    def active_seconds(self) -> float:
        return self.active_before + (time.monotonic() - self.started)

    def lease_until(self) -> Any:
        return timezone.now() + timedelta(seconds=settings.LEASE_SECONDS)

    @property
    def guard(self) -> dict[str, Any]:
        return {"lease_owner": self.owner}

    # --- cancel, shutdown, budgets --------------------------------------------------------

    def _poll(self, force: bool = False) -> str | None:
        """Why this run must stop now, if it must (cancelled, lease lost, shutdown, timeout)."""
        if self._stop_reason:
            return self._stop_reason
        if self.worker is not None and self.worker.stopping:
            self._stop_reason = "handback"
            return self._stop_reason
        timeout = self.limits.get("timeout_seconds")
        if timeout and self.active_seconds() > float(timeout):
            self._stop_reason = "timeout"
            return self._stop_reason
        if self._step_deadline is not None and time.monotonic() > self._step_deadline:
            self._stop_reason = "step_timeout"
            return self._stop_reason
        if self.worker is not None and not force:
            # The worker polls every execution it holds in one query; no read per execution.
            self._stop_reason = self.worker.stop_reason(str(self.execution.pk))
            return self._stop_reason
        now = time.monotonic()
        if force or now - self._last_poll >= CANCEL_POLL_SECONDS:
            self._last_poll = now
            row = (
                Execution.objects.filter(pk=self.execution.pk)
                .values_list("status", "lease_owner")
                .first()
            )
            if row is None or row[0] in TERMINAL:
                self._stop_reason = "cancelled"
            elif row[1] != self.owner:
                self._stop_reason = "lease_lost"
        return self._stop_reason

    def should_stop(self) -> bool:
        return self._poll() is not None

    def raise_stop(self) -> None:
        reason = self._stop_reason or self._poll(force=True)
        if reason == "cancelled":
            raise Cancelled()
        if reason == "lease_lost":
            raise LeaseLost()
        if reason == "handback":
            raise HandBack()
        if reason == "timeout":
            limit = self.limits.get("timeout_seconds")
            raise BudgetExceeded("timeout_seconds", limit, f"{self.active_seconds():.1f}s")
        if reason == "step_timeout":
            limit = self.limits.get("step_timeout_seconds")
            raise BudgetExceeded("step_timeout_seconds", limit, f"more than {limit}s")

    def check(self, *, fresh: bool = False) -> None:
        """Between steps: stop here if cancelled, shutting down, or over a budget. `fresh`
        re-reads the row now (before a step with side effects: a model or tool call)."""
        if self._poll(force=fresh) is not None:
            self.raise_stop()
        max_steps = self.limits.get("max_steps")
        if max_steps and self.steps_done >= int(max_steps):
            raise BudgetExceeded("max_steps", max_steps, self.steps_done)

    def check_budgets(self) -> None:
        max_tokens = self.limits.get("max_tokens")
        if max_tokens and self.tokens["total_tokens"] > int(max_tokens):
            raise BudgetExceeded("max_tokens", max_tokens, self.tokens["total_tokens"])
        max_cost = self.limits.get("max_cost_usd")
        if max_cost is not None and not self.cost_unknown and self.cost > Decimal(str(max_cost)):
            raise BudgetExceeded("max_cost_usd", max_cost, f"{self.cost:.6f}")

    def _stopped_writing(self) -> Exception:
        """The record was refused: find out whether we were cancelled or lost the lease."""
        row = Execution.objects.filter(pk=self.execution.pk).values_list("status").first()
        if row is None or row[0] in TERMINAL:
            return Cancelled()
        return LeaseLost()

    # --- steps -----------------------------------------------------------------------------

    def replay(self, path: str) -> Recorded | None:
        return self.recorded.get(path)

    def step(
        self,
        path: str,
        kind: str,
        fn: Callable[[], Any],
        *,
        input: Any = None,
        message: str = "",
        extra_fields: dict[str, Any] | None = None,
    ) -> Any:
        """Replay the step at `path` or run `fn` and record what it returned."""
        done = self.recorded.get(path)
        if done is not None:
            return done.output
        self.check()
        started_at = timezone.now()
        result = fn()
        if not isinstance(result, StepResult):
            result = StepResult(output=result)
        return self.record(
            path,
            kind,
            input=result.input if result.input is not None else input,
            output=result.output,
            usage=result.usage,
            cost=result.cost,
            started_at=started_at,
            message=result.message or message,
            extra_fields=extra_fields,
        )

    def record(
        self,
        path: str,
        kind: str,
        *,
        input: Any = None,
        output: Any = None,
        usage: dict[str, Any] | None = None,
        cost: Decimal | None = None,
        started_at: Any = None,
        message: str = "",
        extra_fields: dict[str, Any] | None = None,
    ) -> Any:
        output = jsonable(output)
        input = jsonable(input)
        with self._lock:
            if path in self.recorded:  # a parallel branch recorded it first
                return self.recorded[path].output
            self._count(usage, cost)
            fields: dict[str, Any] = {"lease_expires_at": self.lease_until()}
            if usage:
                fields.update(self.usage_fields())
            if extra_fields:
                fields.update(extra_fields)
            try:
                lifecycle.record(
                    self.execution,
                    type="step",
                    guard=self.guard,
                    fields=fields,
                    step_path=path,
                    step_kind=kind,
                    input=input,
                    output=output,
                    usage=usage or None,
                    cost=cost,
                    message=message[:2000],
                    started_at=started_at or timezone.now(),
                    ended_at=timezone.now(),
                )
            except (GuardFailed, IllegalTransition):
                raise self._stopped_writing() from None
            self.recorded[path] = Recorded(output, kind, usage, cost)
            self.steps_done += 1
        self.check_budgets()
        return output

    def note(self, type: str, *, path: str = "", message: str = "", **details: Any) -> None:
        """A history entry that is not a step (a retry, a log line)."""
        try:
            with self._lock:
                lifecycle.record(
                    self.execution,
                    type=type,
                    guard=self.guard,
                    step_path=path,
                    message=message[:2000],
                    **details,
                )
        except (GuardFailed, IllegalTransition):
            raise self._stopped_writing() from None

    # --- events ----------------------------------------------------------------------------

    def emit(self, type: str, data: dict[str, Any]) -> None:
        """Store a streamed event and publish it once the row is committed."""
        event = ExecutionEvent.objects.create(
            execution_id=self.execution.pk, type=type, data=jsonable(data)
        )
        execution_id, event_id = self.execution.pk, event.pk
        transaction.on_commit(
            lambda: events.stream_event(
                execution_id=execution_id, event_type=type, data=event.data, event_id=event_id
            )
        )

    def delta(self, kind: str, text: str) -> None:
        """A streamed chunk of content or thinking; coalesced so a token is not a row."""
        if not text:
            return
        with self._lock:
            if self._buffer_kind not in (None, kind):
                self._flush()
            if not self._buffer:
                self._buffer_since = time.monotonic()
            self._buffer_kind = kind
            self._buffer.append(text)
            if time.monotonic() - self._buffer_since >= DELTA_FLUSH_SECONDS:
                self._flush()

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self._buffer and self._buffer_kind:
            self.emit(self._buffer_kind, {"content": "".join(self._buffer)})
            release_db_connection()  # streaming a slow reply must not pin a connection
        self._buffer = []
        self._buffer_kind = None

    # --- model calls -------------------------------------------------------------------------

    def llm(
        self,
        path: str,
        model: providers.ModelConfig,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        kind: str = "llm",
    ) -> dict[str, Any]:
        """One recorded model call (streamed, retried on transient errors)."""
        done = self.recorded.get(path)
        if done is not None:
            return done.output
        tools = tools or []
        step_timeout = self.limits.get("step_timeout_seconds")
        if step_timeout:
            model.timeout = min(model.timeout, float(step_timeout))

        def call() -> StepResult:
            self.check(fresh=True)

            def on_retry(attempt: int, exc: providers.ProviderError, delay: float) -> None:
                self.note(
                    "retry",
                    path=path,
                    message=f"{exc} — retry {attempt}/{model.max_retries} in {delay:.1f}s",
                )

            self._step_deadline = time.monotonic() + float(step_timeout) if step_timeout else None
            release_db_connection()
            signal = StopSignal(self)
            finished = threading.Event()
            watchdog = threading.Thread(
                target=self._watch, args=(signal, finished), name="steward-watchdog", daemon=True
            )
            watchdog.start()
            try:
                result = providers.complete_with_retries(
                    model,
                    messages,
                    tools,
                    on_delta=self.delta,
                    should_stop=signal,
                    on_retry=on_retry,
                )
            except providers.StreamStopped:
                self.flush()
                self.raise_stop()
                raise Cancelled() from None  # pragma: no cover - raise_stop always raises
            except providers.ProviderError as exc:
                self.flush()
                raise StepFailed(f"model call failed at {path}: {exc}") from None
            finally:
                finished.set()
                self._step_deadline = None
            self.flush()
            if self._stop_reason:
                self.raise_stop()
            usage = result.usage or None
            return StepResult(
                output=result.as_output(),
                usage=usage,
                cost=pricing.cost(model.provider, result.model or model.name, usage),
            )

        return self.step(
            path,
            kind,
            call,
            input={
                "model": {**model.describe(), "simulated": model.simulated},
                "messages": messages,
                "tools": [t["name"] for t in tools],
            },
        )

    def _watch(self, signal: StopSignal, finished: threading.Event) -> None:
        """While a model call is in flight, notice a cancel / lost lease / timeout / shutdown
        even when no chunk arrives, and close the stream so the call ends now."""
        try:
            while not finished.wait(CANCEL_POLL_SECONDS):
                reason = self._background_reason()
                if reason is not None and not finished.is_set():
                    self._stop_reason = reason
                    signal.trip()
                    return
        finally:
            connections.close_all()

    def _background_reason(self) -> str | None:
        if self.worker is not None and self.worker.stopping:
            return "handback"
        timeout = self.limits.get("timeout_seconds")
        if timeout and self.active_seconds() > float(timeout):
            return "timeout"
        if self._step_deadline is not None and time.monotonic() > self._step_deadline:
            return "step_timeout"
        if self.worker is not None:
            return self.worker.stop_reason(str(self.execution.pk))
        try:
            # Under the context lock: SQLite's shared in-memory cache (tests) fails a write
            # that meets a concurrent read instead of waiting.
            with self._lock:
                row = (
                    Execution.objects.filter(pk=self.execution.pk)
                    .values_list("status", "lease_owner")
                    .first()
                )
        except Exception:  # noqa: BLE001 - the next poll tries again
            return None
        finally:
            release_db_connection()
        if row is None:
            return None  # not visible from this thread (an uncommitted test row)
        if row[0] in TERMINAL:
            return "cancelled"
        if row[1] != self.owner:
            return "lease_lost"
        return None

    # --- tools ---------------------------------------------------------------------------------

    def tools(self, entries: Any) -> dict[str, tool_registry.Tool]:
        try:
            return tool_registry.resolve(
                entries, approval_policy=self.config.get("approval_policy")
            )
        except KeyError as exc:
            raise StepFailed(f"unknown tool {exc.args[0]!r}") from None

    def tool_call(
        self,
        path: str,
        tool: tool_registry.Tool | None,
        arguments: Any,
        *,
        call_id: str = "",
        name: str = "",
    ) -> Any:
        """One recorded tool call; a tool that requires approval parks first."""
        done = self.recorded.get(path)
        if done is not None:
            return done.output
        name = tool.name if tool else name
        if tool is None:
            return self.record(
                path,
                "tool",
                input={"tool": name, "arguments": arguments, "call_id": call_id},
                output={"error": f"unknown tool {name!r}"},
            )
        if tool.requires_approval:
            approved, value = self.approval(
                f"{path}.approval",
                {
                    "title": f"Run tool {name}?",
                    "description": f"The agent wants to call `{name}` with these arguments.",
                    "allowed_actions": ["approve", "reject", "edit"],
                    "on_reject": "tell the model",
                },
                {"tool": name, "arguments": arguments},
                source="tool",
                reject_ends=False,
            )
            if not approved:
                return self.record(
                    path,
                    "tool",
                    input={"tool": name, "arguments": arguments, "call_id": call_id},
                    output={
                        "error": "a reviewer refused this tool call",
                        "reason": value.get("reason", ""),
                    },
                )
            if isinstance(value, dict) and isinstance(value.get("arguments"), dict):
                arguments = value["arguments"]
        self.check(fresh=True)
        event_id = call_id or path
        self.emit("tool_start", {"id": event_id, "name": name})
        started_at = timezone.now()
        release_db_connection()
        result = tool_registry.invoke(
            tool, tool_registry.ToolContext(execution=self.execution, path=path), arguments
        )
        self.emit(
            "tool_end", {"id": event_id, "name": name, "summary": tool_registry.summary(result)}
        )
        return self.record(
            path,
            "tool",
            input={"tool": name, "arguments": arguments, "call_id": call_id},
            output=result,
            started_at=started_at,
        )

    # --- checkpoints -----------------------------------------------------------------------------

    def approval(
        self,
        path: str,
        spec: dict[str, Any],
        payload: Any,
        *,
        source: str = "step",
        reject_ends: bool | None = None,
    ) -> tuple[bool, Any]:
        """(approved, value): the recorded decision, the decided Approval, or park on a new one."""
        done = self.recorded.get(path)
        if done is not None:
            return bool(done.output.get("approved")), done.output.get("value")
        decided = checkpoints.approval_outcome(self.execution, path)
        if decided is not None:
            approved = checkpoints.is_approved(decided)
            value = (
                checkpoints.approved_value(decided) if approved else checkpoints.refusal(decided)
            )
            self.record(
                path,
                "approval",
                input=payload,
                output={"approved": approved, "value": value, "approval_id": str(decided.pk)},
                message=f"{decided.status} by {decided.decided_by_label or 'policy'}",
            )
            return approved, jsonable(value)
        payload = jsonable(payload)

        def park() -> None:
            approval = checkpoints.create_approval(
                self.execution,
                step_path=path,
                spec=spec,
                payload=payload,
                source=source,
                reject_ends=reject_ends,
            )
            state = self.parked_state()
            state["approval"] = {"path": path, "approval_id": str(approval.pk)}
            self._park_transition(
                Status.AWAITING_APPROVAL,
                path=path,
                kind="approval",
                input=payload,
                message=approval.title,
                state=state,
            )

        raise Park("approval", park)

    def wait_for_input(self, path: str, info: Any, schema: Any) -> Any:
        done = self.recorded.get(path)
        if done is not None:
            return done.output
        waiting = self.state.get("waiting") or {}
        if waiting.get("path") == path and "resume_input" in self.state:
            state = {k: v for k, v in self.state.items() if k not in {"waiting", "resume_input"}}
            value = self.state["resume_input"]
            output = self.record(
                path,
                "wait_for_input",
                input=info,
                output=value,
                extra_fields={"state": state},
            )
            self.state = state
            return output
        info = jsonable(info)

        def park() -> None:
            state = self.parked_state()
            state.pop("resume_input", None)
            state["waiting"] = {"path": path, "schema": schema, "info": info}
            self._park_transition(
                Status.AWAITING_INPUT,
                path=path,
                kind="wait_for_input",
                input=info,
                message="waiting for input",
                state=state,
            )

        raise Park("input", park)

    def sleep(self, path: str, seconds: float, passthrough: Any) -> Any:
        done = self.recorded.get(path)
        if done is not None:
            return passthrough
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
            until = timezone.datetime.fromisoformat(sleeps[path])
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
            from executions import tasks

            state = self.parked_state()
            state["sleeps"] = sleeps
            state["parked"] = {"kind": "sleep", "path": path, "until": until.isoformat()}
            self._park_in_place(
                "sleep", path=path, message=f"sleeping until {until.isoformat()}", state=state
            )
            execution_id = self.execution.pk
            transaction.on_commit(lambda: tasks.enqueue_run(execution_id, run_after=until))

        raise Park("sleep", park)

    def child(self, path: str, *, workflow: str, arguments: Any) -> Any:
        """Run a sub-workflow as a child execution; the parent parks (still running, no lease)
        until the child finishes, when the child's end queues the parent again."""
        done = self.recorded.get(path)
        if done is not None:
            return done.output
        children = dict(self.state.get("children") or {})
        child_id = children.get(path)
        if child_id:
            child = Execution.objects.filter(pk=child_id).first()
            if child is not None and child.status == Status.COMPLETED:
                return self.record(
                    path,
                    "yield",
                    input={
                        "workflow": workflow,
                        "arguments": arguments,
                        "child_execution_id": str(child.pk),
                    },
                    output=child.output,
                )
            if child is None or child.status in TERMINAL:
                status = child.status if child else "missing"
                error = f": {child.error}" if child is not None and child.error else ""
                raise StepFailed(f"child execution {child_id} {status}{error}")

            def wait() -> None:
                state = self.parked_state()
                state["parked"] = {"kind": "child", "path": path, "child": child_id}
                self._park_in_place(None, path=path, message="", state=state)

            raise Park("child", wait)

        def spawn() -> None:
            child = self._create_child(workflow=workflow, arguments=arguments, path=path)
            children[path] = str(child.pk)
            state = self.parked_state()
            state["children"] = children
            state["parked"] = {"kind": "child", "path": path, "child": str(child.pk)}
            self._park_in_place(
                "wait",
                path=path,
                message=f"waiting for child execution {child.pk} ({workflow})",
                state=state,
            )

        raise Park("child", spawn)

    def _create_child(self, *, workflow: str, arguments: Any, path: str) -> Execution:
        """A child row made here rather than by services.execution_start: a sub-workflow's
        arguments follow the sub-workflow, not the version's input_schema."""
        from executions import tasks
        from executions.models import new_id

        parent = self.execution
        child_id = new_id()
        child = Execution.objects.create(
            id=child_id,
            trace_id=parent.trace_id or parent.pk.hex,
            workspace_id=parent.workspace_id,
            agent_id=parent.agent_id,
            agent_version_id=parent.agent_version_id,
            parent=parent,
            session_id=parent.session_id,
            input=jsonable(arguments),
            metadata={"workflow": workflow, "parent_step": path},
            created_by_user_id=parent.created_by_user_id,
            created_by_key_id=parent.created_by_key_id,
        )
        lifecycle.record(child, type="init", input=child.input)
        transaction.on_commit(lambda: tasks.enqueue_run(child_id))
        return child

    def parked_state(self) -> dict[str, Any]:
        state = dict(self.state)
        state["active_seconds"] = round(self.active_seconds(), 3)
        return state

    def _park_transition(
        self, to: str, *, path: str, kind: str, input: Any, message: str, state: dict[str, Any]
    ) -> None:
        try:
            lifecycle.transition(
                self.execution,
                to,
                type="wait",
                guard=self.guard,
                step_path=path,
                step_kind=kind,
                input=input,
                message=message,
                fields={
                    "state": state,
                    "lease_owner": "",
                    "lease_expires_at": None,
                    **self.usage_fields(),
                },
            )
        except (GuardFailed, IllegalTransition):
            raise self._stopped_writing() from None
        self.state = state
        self.lease_released = True

    def _park_in_place(
        self, type: str | None, *, path: str, message: str, state: dict[str, Any]
    ) -> None:
        """Park without a status change (sleep, waiting for a child): the execution stays
        running but no worker holds it; a timer or the child queues it again."""
        fields = {"state": state, "lease_owner": "", "lease_expires_at": None}
        if type is None:
            won = Execution.objects.filter(pk=self.execution.pk, lease_owner=self.owner).update(
                **fields, updated_at=timezone.now()
            )
            if not won:
                raise self._stopped_writing()
        else:
            try:
                lifecycle.record(
                    self.execution,
                    type=type,
                    guard=self.guard,
                    step_path=path,
                    message=message,
                    fields={**fields, **self.usage_fields()},
                )
            except (GuardFailed, IllegalTransition):
                raise self._stopped_writing() from None
        self.state = state
        self.lease_released = True

    # --- concurrency -----------------------------------------------------------------------------

    def run_parallel(self, fns: list[Callable[[], Any]], parallelism: int | None = None) -> list:
        """Run branches on threads. Failures win over parks; a park is raised after every branch
        has run as far as it can (their finished steps are recorded)."""
        if len(fns) <= 1 or (parallelism is not None and parallelism <= 1) or _serial_db():
            return [fn() for fn in fns]
        results: list[Any] = [None] * len(fns)
        errors: list[BaseException | None] = [None] * len(fns)

        def branch(i: int) -> None:
            try:
                results[i] = fns[i]()
            except BaseException as exc:  # noqa: BLE001 - re-raised below on the caller's thread
                errors[i] = exc
            finally:
                connections.close_all()

        workers = min(len(fns), parallelism or len(fns), 16)
        with ThreadPoolExecutor(max_workers=workers, initializer=self._bind_thread) as pool:
            list(pool.map(branch, range(len(fns))))
        for exc in errors:
            if exc is not None and not isinstance(exc, Park):
                raise exc
        for exc in errors:
            if exc is not None:
                raise exc
        return results
