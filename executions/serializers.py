"""Native (PromptRails-dialect) JSON shapes of our objects. Compat faces reshape these."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from executions.models import Agent, AgentVersion, Execution, Transition


def iso(value: Any) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def money(value: Decimal | None) -> float | None:
    return float(value) if value is not None else None


def agent_out(agent: Agent) -> dict[str, Any]:
    version = agent.current_version
    return {
        "id": str(agent.pk),
        "workspace_id": str(agent.workspace_id),
        "name": agent.name,
        "description": agent.description,
        "type": agent.type,
        "status": "active" if version else "draft",
        "labels": [],
        "metadata": agent.metadata,
        "current_version": version_out(version, current=True) if version else None,
        "current_version_id": str(version.pk) if version else None,
        "created_at": iso(agent.created_at),
        "updated_at": iso(agent.updated_at),
    }


def version_out(version: AgentVersion, *, current: bool | None = None) -> dict[str, Any]:
    config = version.config or {}
    if current is None:
        current = version.agent.current_version_id == version.pk
    return {
        "id": str(version.pk),
        "agent_id": str(version.agent_id),
        "version": version.version,
        "number": version.number,
        "config": config,
        "input_schema": version.input_schema or {},
        "output_schema": version.output_schema,
        "is_current": bool(current),
        "message": version.message,
        "model_config": config.get("model_config") or _model_summary(config.get("model")),
        "run_budget": config.get("run_budget") or config.get("limits"),
        "approval_policy": config.get("approval_policy"),
        "tools": [t if isinstance(t, dict) else {"name": t} for t in config.get("tools") or []],
        "simulated": is_simulated_config(config),
        "created_at": iso(version.created_at),
    }


def _model_summary(model: Any) -> dict[str, Any] | None:
    if model is None:
        return None
    if isinstance(model, str):
        return {"model_id": model}
    return {k: v for k, v in model.items() if k != "script"}


def is_simulated_config(config: dict[str, Any]) -> bool:
    model = config.get("model")
    provider = model.get("provider", "builtin") if isinstance(model, dict) else "builtin"
    if isinstance(model, str) and ":" in model:
        provider = model.split(":", 1)[0]
    return provider == "builtin"


def execution_out(execution: Execution, *, children: list | None = None) -> dict[str, Any]:
    version = execution.agent_version
    data = {
        "id": str(execution.pk),
        "execution_id": str(execution.pk),
        "agent_id": str(execution.agent_id),
        "agent_name": execution.agent.name,
        "agent_version_id": str(execution.agent_version_id) if execution.agent_version_id else "",
        "version": version.version if version else None,
        "workspace_id": str(execution.workspace_id),
        "user_id": str(execution.created_by_user_id) if execution.created_by_user_id else "",
        "api_key_id": str(execution.created_by_key_id) if execution.created_by_key_id else None,
        "session_id": execution.session_id,
        "parent_execution_id": str(execution.parent_id) if execution.parent_id else None,
        "retry_of": str(execution.retry_of_id) if execution.retry_of_id else None,
        "status": execution.status,
        "input": execution.input,
        "output": execution.output,
        "error": execution.error,
        "metadata": execution.metadata,
        "token_usage": {
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "total_tokens": 0,
            **(execution.token_usage or {}),
        },
        "cost": money(execution.cost),
        "cost_known": execution.cost is not None or not execution.token_usage,
        "duration_ms": execution.duration_ms,
        "trace_id": execution.trace_id,
        "transition_count": execution.transition_count,
        "simulated": is_simulated_config(version.config or {}) if version else False,
        "cancel_requested": execution.cancel_requested_at is not None,
        "started_at": iso(execution.started_at),
        "completed_at": iso(execution.completed_at),
        "created_at": iso(execution.created_at),
        "updated_at": iso(execution.updated_at),
    }
    if children is not None:
        data["children"] = children
    return data


def tree_out(node: dict[str, Any]) -> dict[str, Any]:
    return execution_out(node["execution"], children=[tree_out(c) for c in node["children"]])


def transition_out(step: Transition) -> dict[str, Any]:
    return {
        "id": step.pk,
        "execution_id": str(step.execution_id),
        "seq": step.seq,
        "type": step.type,
        "from_status": step.from_status,
        "to_status": step.to_status,
        "step_path": step.step_path,
        "step_kind": step.step_kind,
        "input": step.input,
        "output": step.output,
        "usage": step.usage,
        "cost": money(step.cost),
        "message": step.message,
        "actor": {"type": step.actor_type, "label": step.actor_label},
        "started_at": iso(step.started_at),
        "ended_at": iso(step.ended_at),
        "created_at": iso(step.created_at),
    }
