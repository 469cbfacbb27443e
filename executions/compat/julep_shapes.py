"""What the Julep faces (2.21 at /julep, 0.3.9 at /julep/v0) show: statuses, agents, tasks,
executions and transitions in Julep's words, and errors in its FastAPI body.

Mapping (docs/compat.md): a Julep agent is a Steward agent of type `agent` (`about` is its
description; model, instructions and settings live in its current version); a Julep task is a
workflow agent that belongs to it (services.agent_workflow_create); an execution is an
execution of that workflow; transitions are its Transition rows.
"""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from executions.compat import common
from executions.lifecycle import PARKED, TERMINAL, Status
from executions.models import Agent, Execution, Transition
from executions.serializers import iso
from executions.services.agents import WORKFLOW_OWNER_KEY

STATUS = {
    Status.PENDING: "queued",
    Status.RUNNING: "running",
    Status.AWAITING_APPROVAL: "awaiting_input",
    Status.AWAITING_INPUT: "awaiting_input",
    Status.COMPLETED: "succeeded",
    Status.FAILED: "failed",
    Status.REJECTED: "failed",
    Status.CANCELLED: "cancelled",
}
TRANSITION_TYPES = {
    "init",
    "init_branch",
    "finish",
    "finish_branch",
    "wait",
    "resume",
    "error",
    "step",
    "cancelled",
}
# Keys of a task body that are task attributes, not workflows or step lists.
TASK_FIELDS = {"name", "description", "canonical_name", "inherit_tools", "metadata", "tools"}
# Keys of a version config that never show in a Julep task.
HIDDEN_CONFIG = {"model", "system_prompt", "type", "julep_agent", "limits", "run_budget"}
# Query parameters: a problem with one of these is located in the query, not the body.
QUERY_FIELDS = {
    "limit",
    "offset",
    "sort_by",
    "direction",
    "metadata_filter",
    "scope_id",
    "next_page_token",
}


# --- errors ----------------------------------------------------------------------------------


def _loc(field: str) -> list[Any]:
    parts: list[Any] = [int(p) if p.isdigit() else p for p in re.findall(r"[^.\[\]]+", field)]
    if parts and parts[0] == "config":
        parts = parts[1:]
    if parts and parts[0] in QUERY_FIELDS:
        return ["query", *parts]
    return ["body", *parts]


def render_error(request: HttpRequest, problem: common.Problem) -> HttpResponse:
    """Julep's API is FastAPI: `{"detail": "..."}`, and 422 `{"detail": [{loc, msg, type}]}`."""
    if problem.status == 422 and problem.fields:
        detail: Any = [
            {
                "loc": _loc(f.get("field", "body")),
                "msg": f.get("message", ""),
                "type": "value_error",
            }
            for f in problem.fields
        ]
    else:
        detail = problem.message
    response = JsonResponse({"detail": detail}, status=problem.status)
    # The 2.21 SDK retries 409s: a state conflict will not change by retrying. (It still retries
    # 429s, which is right: they carry Retry-After.)
    if problem.status == 409:
        response["x-should-retry"] = "false"
    return response


# --- shapes ----------------------------------------------------------------------------------


def julep_status(execution: Execution) -> str:
    # `starting`: moved to running but no step recorded yet (init is seq 1, the start seq 2).
    if execution.status == Status.RUNNING and execution.transition_count <= 2:
        return "starting"
    return STATUS.get(execution.status, execution.status)


def agent_out(agent: Agent) -> dict[str, Any]:
    config = (agent.current_version.config if agent.current_version else None) or {}
    return {
        "id": str(agent.pk),
        "name": agent.name,
        "about": agent.description,
        "model": config.get("model") if isinstance(config.get("model"), str) else None,
        "instructions": config.get("system_prompt", []),
        "default_settings": config.get("default_settings"),
        "default_system_template": config.get("default_system_template"),
        "canonical_name": config.get("canonical_name"),
        "project": config.get("project"),
        "metadata": agent.metadata or {},
        "created_at": iso(agent.created_at),
        "updated_at": iso(agent.updated_at),
    }


def task_out(agent: Agent) -> dict[str, Any]:
    version = agent.current_version
    config = (version.config if version else None) or {}
    metadata = {k: v for k, v in (agent.metadata or {}).items() if k != WORKFLOW_OWNER_KEY}
    task: dict[str, Any] = {
        "id": str(agent.pk),
        "agent_id": (agent.metadata or {}).get(WORKFLOW_OWNER_KEY),
        "name": config.get("name") or agent.name,
        "description": agent.description,
        "canonical_name": config.get("canonical_name"),
        "main": config.get("main", []),
        "input_schema": version.input_schema if version else None,
        "tools": config.get("tools") or [],
        "inherit_tools": bool(config.get("inherit_tools", False)),
        "metadata": metadata,
        "version": version.version if version else None,
        "created_at": iso(agent.created_at),
        "updated_at": iso(agent.updated_at),
    }
    for key, value in config.items():
        if key not in task and key not in HIDDEN_CONFIG and key not in TASK_FIELDS:
            task[key] = value
    return task


def execution_out(execution: Execution) -> dict[str, Any]:
    return {
        "id": str(execution.pk),
        "task_id": str(execution.agent_id),
        "status": julep_status(execution),
        "input": execution.input,
        "output": execution.output,
        "error": execution.error or None,
        "metadata": execution.metadata or {},
        "transition_count": execution.transition_count,
        "session_id": execution.session_id or None,
        "created_at": iso(execution.created_at),
        "updated_at": iso(execution.updated_at),
    }


def transition_type(step: Transition) -> str:
    """Our history types in Julep's vocabulary; unknown ones by the move they made."""
    kind = step.type
    if kind == "approved":
        return "resume"
    if kind in {"rejected", "expired"}:
        return "error" if step.to_status in TERMINAL else "resume"
    if kind in TRANSITION_TYPES:
        return kind
    if step.to_status != step.from_status:
        if step.to_status == Status.COMPLETED:
            return "finish"
        if step.to_status in {Status.FAILED, Status.REJECTED}:
            return "error"
        if step.to_status == Status.CANCELLED:
            return "cancelled"
        if step.to_status in PARKED:
            return "wait"
        if step.from_status in PARKED:
            return "resume"
    return "step"


def _position(step: Transition) -> dict[str, Any]:
    """`current`: which workflow and step index the transition belongs to."""
    workflow, index = "main", 0
    if step.step_path:
        match = re.match(r"\s*([A-Za-z_][\w-]*)?\W*(\d+)?", step.step_path)
        if match:
            workflow = match.group(1) or "main"
            index = int(match.group(2)) if match.group(2) else 0
    return {"workflow": workflow, "step": index, "scope_id": str(step.execution_id)}


def transition_out(step: Transition) -> dict[str, Any]:
    return {
        "id": str(step.pk),
        "execution_id": str(step.execution_id),
        "type": transition_type(step),
        "output": step.output,
        "current": _position(step),
        "next": None,
        "step_label": step.step_path or None,
        "metadata": {
            "seq": step.seq,
            "native_type": step.type,
            "step_kind": step.step_kind or None,
            "from_status": step.from_status,
            "to_status": step.to_status,
            "message": step.message or None,
            "actor": step.actor_label,
        },
        "created_at": iso(step.created_at),
        "updated_at": iso(step.ended_at or step.created_at),
    }


def items(rows: list, shape) -> JsonResponse:
    return JsonResponse({"items": [shape(row) for row in rows]})
