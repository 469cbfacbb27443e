"""Shared setup for the dashboard tests: logged-in browsers and a parked refund execution."""

from __future__ import annotations

from typing import Any

from django.test import Client

from executions import lifecycle, services
from executions.engine.checkpoints import create_approval

REFUND_SPEC = {
    "title": "Refund order A-1001",
    "description": "The customer asks for a **refund** of a damaged item.",
    "allowed_actions": ["approve", "reject", "edit"],
    "assignee_roles": ["reviewer"],
    "payload_schema": {
        "type": "object",
        "properties": {
            "tool": {"type": "string"},
            "arguments": {
                "type": "object",
                "properties": {
                    "order_id": {"type": "string"},
                    "amount": {"type": "number", "minimum": 0, "maximum": 500},
                },
                "required": ["order_id", "amount"],
            },
        },
    },
}
REFUND_PAYLOAD = {"tool": "refund", "arguments": {"order_id": "A-1001", "amount": 120.0}}


def browser(member: Any) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(member.user)
    return client


def csrf_post(client: Client, path: str, data: dict | None = None, **extra: Any):
    """POST like a browser: read the CSRF cookie from a page first, send it back as a field."""
    client.get("/")
    token = client.cookies["csrftoken"].value
    return client.post(path, {**(data or {}), "csrfmiddlewaretoken": token}, **extra)


def start(agent: Any, *, n: int = 2, actor: Any = lifecycle.SYSTEM, **kwargs: Any):
    execution, _ = services.execution_start(
        workspace=agent.workspace, agent=agent, input={"n": n}, actor=actor, **kwargs
    )
    return execution


def park(execution: Any, *, spec: dict | None = None, payload: Any = None):
    """Move an execution to awaiting_approval on a refund checkpoint, as the engine does."""
    lifecycle.transition(execution, "running", type="start", step_path="main[0]")
    lifecycle.transition(
        execution,
        "awaiting_approval",
        type="wait",
        step_path="main[1]",
        step_kind="approval",
        message="waiting for a refund decision",
    )
    return create_approval(
        execution,
        step_path="main[1]",
        spec=spec or REFUND_SPEC,
        payload=REFUND_PAYLOAD if payload is None else payload,
    )
