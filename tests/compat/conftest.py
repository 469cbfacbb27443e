"""Shared pieces of the SDK compatibility tests: a live server with the embedded worker, agents
made through the services, and a poll helper with a deadline (never an endless loop)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from executions import services
from executions.models import Agent

DOUBLER = {
    "main": [{"evaluate": {"doubled": "$ inputs['n'] * 2"}}, {"return": {"n": "$ _['doubled']"}}]
}
NUMBER_SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}},
    "required": ["n"],
}
# Parks on wait_for_input, then returns what it was given.
ASKS = {
    "main": [
        {"wait_for_input": {"info": {"question": "Which colour?"}}},
        {"return": {"answer": "$ _['colour']"}},
    ]
}
# Parks for a reviewer's approval, then returns.
GATED = {
    "main": [
        {"approval": {"title": "Ship order {{ inputs['n'] }}?"}},
        {"return": {"shipped": "$ inputs['n']"}},
    ]
}
# Fails on purpose at its second step.
BROKEN = {
    "main": [
        {"evaluate": {"x": "$ inputs['n'] + 1"}},
        {"error": "the warehouse is closed"},
    ]
}


@pytest.fixture(autouse=True)
def _embedded_worker(settings):
    # The live server runs the worker in its own process, also on PostgreSQL (where the
    # production default is separate `manage.py worker` processes).
    settings.EMBEDDED_WORKER = True


def make_agent(
    workspace: Any, name: str, config: dict, *, type: str = "workflow", schema: dict | None = None
) -> Agent:
    agent = services.agent_create(workspace=workspace, name=name, type=type)
    services.agent_version_create(agent=agent, config=config, input_schema=schema)
    agent.refresh_from_db()
    return agent


def wait_until(check: Callable[[], Any], *, timeout: float = 20.0, what: str = "condition") -> Any:
    """Call `check` until it returns something truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)
