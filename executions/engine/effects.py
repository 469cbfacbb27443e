"""Steps with side effects outside the database: model calls and tool calls. Each is recorded
before anything that depends on it leaves the process, and replayed (never repeated) on a
re-run. A model call streams its deltas, retries transient provider errors, and is watched by
a thread that closes the stream when the run must stop."""

from __future__ import annotations

import time
from contextlib import ExitStack
from typing import Any

from django.db import transaction
from django.utils import timezone

from executions.engine import pricing, providers
from executions.engine import tools as tool_registry
from executions.engine.records import StepResult
from executions.engine.stop import Cancelled, StepFailed, StopSignal
from executions.engine.threads import long_wait, single_writer_db


class Effects:
    """The model-call and tool-call part of RunContext. Uses: step(), record(), note(),
    check(), raise_stop(), watch(), approval(), delta(), flush(), emit(), take_start_proof(),
    recorded, limits, config, execution, _lock."""

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
        # A run still pending writes its start just before the call (step's before_effect): a
        # compare-and-set on status and lease that has just proved what a fresh read would.
        proven_by_start = self.start_deferred or self.take_start_proof()

        def call() -> StepResult:
            self.check(fresh=not proven_by_start)

            def on_retry(attempt: int, exc: providers.ProviderError, delay: float) -> None:
                self.note(
                    "retry",
                    path=path,
                    message=f"{exc} — retry {attempt}/{model.max_retries} in {delay:.1f}s",
                )

            self._step_deadline = time.monotonic() + float(step_timeout) if step_timeout else None
            signal = StopSignal(self)
            finished = self.watch_call(signal)
            try:
                # The reply's wait (and the SDK's parsing of it) without a database connection
                # and without a place at the worker's gate (threads.Gate).
                with long_wait():
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
                finished()
                self._step_deadline = None
            # The call's record, and its reply's last content event, are held back until the
            # run's next write (the end, a park, or just before the next side effect), so a
            # model run costs one transaction fewer; only pure steps run in between, and a
            # hand-back writes it first (RunContext.raise_stop). Not for Python agents:
            # arbitrary code runs between their steps.
            self._held_effect = self.execution.agent.type != "python"
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
        call_input = {"tool": name, "arguments": arguments, "call_id": call_id}
        if tool is None:
            return self.record(
                path, "tool", input=call_input, output={"error": f"unknown tool {name!r}"}
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
                    input=call_input,
                    output={
                        "error": "a reviewer refused this tool call",
                        "reason": value.get("reason", ""),
                    },
                )
            if isinstance(value, dict) and isinstance(value.get("arguments"), dict):
                arguments = value["arguments"]
        self.check(fresh=True)
        self.before_effect()
        event_id = call_id or path
        self.emit("tool_start", {"id": event_id, "name": name})
        started_at = timezone.now()
        # The tool runs inside the transaction that records it: a tool whose effect is a
        # write to this database (the built-in ones) then happens exactly once, even if the
        # process dies between its write and the record. An effect outside the database
        # cannot be made so by us; a crash inside that window repeats it (docs/decisions.md).
        # Parallel tool calls run this at once on PostgreSQL. Streams read events by id, so an
        # event must never commit after a later id of the same run is visible: from the end of
        # the call until this transaction has committed, the run's lock keeps every other
        # thread's events out (emit() takes it too). The call itself runs unlocked.
        # On SQLite, one writer: a tool that writes holds the database's write lock until this
        # transaction commits, while another branch's emit() holds the run's lock and waits for
        # that write lock; taking the run's lock here only after the call would deadlock the
        # two until the busy timeout. So on SQLite the run's lock comes first and the tools of
        # a turn run one after another (their writes would queue for the one writer anyway).
        with ExitStack() as held_until_committed:
            if single_writer_db():
                held_until_committed.enter_context(self._lock)
            with transaction.atomic():
                result = tool_registry.invoke(
                    tool, tool_registry.ToolContext(execution=self.execution, path=path), arguments
                )
                held_until_committed.enter_context(self._lock)
                self.emit(
                    "tool_end",
                    {"id": event_id, "name": name, "summary": tool_registry.summary(result)},
                )
                return self.record(
                    path,
                    "tool",
                    input={"tool": name, "arguments": arguments, "call_id": call_id},
                    output=result,
                    started_at=started_at,
                )
