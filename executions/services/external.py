"""External agents: programs that run their agent elsewhere and report to Steward.

`POST /api/v1/executions/{id}/events` lands here. Each event becomes history (a Transition) or
a streamed event, exactly as the engine would have recorded it, so the timeline, traces, live
pages and webhooks treat an external run like any other.

Event types:
- `step`: {name, kind?, input?, output?, usage?, cost?, started_at?, ended_at?, message?}
- `log`: {message}
- `usage`: {usage: {prompt_tokens, completion_tokens, total_tokens}, cost?}
- `content` / `thinking` / `tool_start` / `tool_end`: streamed to live subscribers
- `completed` (alias `output`, `finish`): {output}, validated against the output schema
- `failed` (alias `error`): {error}
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from executions import lifecycle
from executions.errors import Conflict, ValidationFailed, field_error
from executions.lifecycle import Actor, Status
from executions.live import events
from executions.models import AgentType, Execution, ExecutionEvent
from executions.schemas import validate

MAX_EVENTS = 100
STREAMED = {"content", "thinking", "tool_start", "tool_end"}
FINISH = {"completed", "output", "finish", "done"}
FAIL = {"failed", "error"}
KNOWN = {"step", "log", "usage"} | STREAMED | FINISH | FAIL
USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def external_events_record(
    *, execution: Execution, events: list[dict[str, Any]], actor: Actor
) -> Execution:
    """Record a batch of events in order, all or nothing."""
    if execution.agent.type != AgentType.EXTERNAL:
        raise Conflict(
            f"execution {execution.pk} is run by Steward's engine (agent type "
            f"{execution.agent.type}); only executions of external agents accept events",
            code="not_external",
        )
    if not isinstance(events, list) or not events:
        raise ValidationFailed("send at least one event", details=[field_error("events", "empty")])
    if len(events) > MAX_EVENTS:
        raise ValidationFailed(
            f"at most {MAX_EVENTS} events per request",
            details=[field_error("events", f"at most {MAX_EVENTS}")],
        )
    for i, event in enumerate(events):
        _check(event, f"events[{i}]")
    with transaction.atomic():
        # Lock the row: usage is summed from what is stored, so concurrent posts must queue.
        locked = Execution.objects.select_for_update().get(pk=execution.pk)
        for field in ("status", "transition_count", "token_usage", "cost", "started_at"):
            setattr(execution, field, getattr(locked, field))
        if execution.status == Status.PENDING:
            lifecycle.transition(execution, Status.RUNNING, type="start", actor=actor)
        for i, event in enumerate(events):
            _apply(execution, event, actor=actor, where=f"events[{i}]")
    return execution


def _check(event: Any, where: str) -> None:
    if not isinstance(event, dict):
        raise ValidationFailed("each event is an object", details=[field_error(where, "object")])
    kind = event.get("type")
    if kind not in KNOWN:
        raise ValidationFailed(
            f"{where}.type: unknown event type {kind!r}",
            details=[field_error(f"{where}.type", f"one of {', '.join(sorted(KNOWN))}")],
        )
    if kind == "step" and not str(event.get("name") or event.get("step") or "").strip():
        raise ValidationFailed(
            f"{where}.name: a step needs a name", details=[field_error(f"{where}.name", "required")]
        )
    if kind == "log" and not str(event.get("message") or "").strip():
        raise ValidationFailed(
            f"{where}.message: a log needs a message",
            details=[field_error(f"{where}.message", "required")],
        )
    if kind in FAIL and not str(event.get("error") or event.get("message") or "").strip():
        raise ValidationFailed(
            f"{where}.error: say what went wrong",
            details=[field_error(f"{where}.error", "required")],
        )
    if "usage" in event and event["usage"] is not None:
        usage = event["usage"]
        if not isinstance(usage, dict) or any(
            not isinstance(usage.get(k, 0), int) or isinstance(usage.get(k, 0), bool)
            for k in USAGE_KEYS
        ):
            raise ValidationFailed(
                f"{where}.usage: token counts must be integers",
                details=[field_error(f"{where}.usage", "integers")],
            )


def _cost(value: Any, where: str) -> Decimal | None:
    if value is None:
        return None
    try:
        cost = Decimal(str(value))
    except InvalidOperation:
        raise ValidationFailed(
            f"{where}.cost must be a number", details=[field_error(f"{where}.cost", "number")]
        ) from None
    if cost < 0:
        raise ValidationFailed(
            f"{where}.cost must be >= 0", details=[field_error(f"{where}.cost", ">= 0")]
        )
    return cost


def _rolled_up(execution: Execution, usage: dict | None, cost: Decimal | None) -> dict:
    """The execution's totals with this event's usage and cost added (row locked by caller)."""
    fields: dict[str, Any] = {}
    if usage:
        total = {k: int((execution.token_usage or {}).get(k, 0)) for k in USAGE_KEYS}
        prompt = int(usage.get("prompt_tokens", 0) or 0)
        completion = int(usage.get("completion_tokens", 0) or 0)
        total["prompt_tokens"] += prompt
        total["completion_tokens"] += completion
        total["total_tokens"] += int(usage.get("total_tokens") or prompt + completion)
        fields["token_usage"] = {**(execution.token_usage or {}), **total}
    if cost is not None:
        fields["cost"] = (execution.cost or Decimal(0)) + cost
    return fields


def _apply(execution: Execution, event: dict[str, Any], *, actor: Actor, where: str) -> None:
    kind = event["type"]
    usage = event.get("usage") or None
    cost = _cost(event.get("cost"), where)
    if kind == "step":
        lifecycle.record(
            execution,
            type="step",
            actor=actor,
            step_path=str(event.get("name") or event.get("step"))[:200],
            step_kind=str(event.get("kind") or "external")[:32],
            input=event.get("input"),
            output=event.get("output"),
            usage=usage,
            cost=cost,
            message=str(event.get("message") or ""),
            started_at=_dt(event.get("started_at")),
            ended_at=_dt(event.get("ended_at")),
            fields=_rolled_up(execution, usage, cost),
        )
    elif kind == "log":
        lifecycle.record(
            execution,
            type="log",
            actor=actor,
            message=str(event["message"])[:10_000],
            output=event.get("data"),
            fields=_rolled_up(execution, usage, cost),
        )
    elif kind == "usage":
        lifecycle.record(
            execution,
            type="usage",
            actor=actor,
            usage=usage,
            cost=cost,
            fields=_rolled_up(execution, usage, cost),
        )
    elif kind in STREAMED:
        data = {k: v for k, v in event.items() if k != "type"}
        stored = ExecutionEvent.objects.create(execution=execution, type=kind, data=data)
        execution_id, event_id = execution.pk, stored.pk
        transaction.on_commit(
            lambda: events.stream_event(
                execution_id=execution_id, event_type=kind, data=data, event_id=event_id
            )
        )
    elif kind in FINISH:
        output = event.get("output")
        schema = execution.agent_version.output_schema if execution.agent_version_id else None
        validate(schema, output, prefix=f"{where}.output", what="output")
        lifecycle.transition(
            execution,
            Status.COMPLETED,
            type="finish",
            actor=actor,
            output=output,
            usage=usage,
            cost=cost,
            fields={"output": output, **_rolled_up(execution, usage, cost)},
        )
    elif kind in FAIL:
        error = str(event.get("error") or event.get("message"))[:10_000]
        lifecycle.transition(
            execution,
            Status.FAILED,
            type="error",
            actor=actor,
            message=error,
            fields={"error": error, **_rolled_up(execution, usage, cost)},
        )


def _dt(value: Any) -> Any:
    if not value:
        return None
    try:
        parsed = parse_datetime(str(value))
    except ValueError:
        parsed = None
    if parsed is None:
        raise ValidationFailed(
            f"{value!r} is not an ISO-8601 datetime",
            details=[field_error("started_at", "ISO-8601 datetime")],
        )
    return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, timezone.UTC)
