"""Fixtures for approval tests: the demo refund desk, workflows with an approval step, and a
helper that runs an execution to its next stop in this thread (the same runner a worker uses)."""

from __future__ import annotations

from typing import Any

import pytest

from executions import services
from executions.demo import demo_seed
from executions.engine import runner
from executions.lifecycle import Status
from executions.models import Agent, Execution


def run_to_stop(execution: Execution, *, rounds: int = 10) -> Execution:
    """Run until the execution parks or ends (what a worker does with the queued task)."""
    for _ in range(rounds):
        execution.refresh_from_db()
        if execution.status not in {Status.PENDING, Status.RUNNING}:
            break
        runner.run(execution.pk)
    execution.refresh_from_db()
    return execution


def make_workflow(workspace: Any, name: str, main: list, **config: Any) -> Agent:
    agent = services.agent_create(workspace=workspace, name=name, type="workflow")
    services.agent_version_create(agent=agent, config={"main": main, **config})
    agent.refresh_from_db()
    return agent


def approval_workflow(workspace: Any, name: str = "gate", **spec: Any) -> Agent:
    """evaluate → approval (with `spec`) → return what the approval step yielded."""
    approval = {"title": "Ship it?", "payload": {"amount": "$ inputs.get('amount', 10)"}, **spec}
    return make_workflow(
        workspace,
        name,
        [
            {"evaluate": {"amount": "$ inputs.get('amount', 10)"}},
            {"approval": approval},
            {"return": {"approved": "$ _"}},
        ],
    )


@pytest.fixture
def refund_desk(owner) -> Agent:
    return demo_seed(workspace=owner.workspace, user=owner.user)["refund-desk"]


@pytest.fixture
def start(owner):
    def starter(agent: Agent, input: Any, *, member: Any = None) -> Execution:
        who = member or owner
        response = who.post("/api/v1/executions", {"agent_id": str(agent.pk), "input": input})
        assert response.status_code == 201, response.json()
        execution = Execution.objects.get(pk=response.json()["data"]["id"])
        return run_to_stop(execution)

    return starter


def run_queued(queue: str = "webhooks") -> int:
    """Run the tasks queued on `queue` that are due, in this thread (what a worker does)."""
    from django_tasks_db.models import DBTaskResult

    ran = 0
    for row in list(DBTaskResult.objects.ready().filter(queue_name=queue)):
        args = row.args_kwargs
        DBTaskResult.objects.filter(pk=row.pk).delete()
        row.task.call(*args["args"], **args["kwargs"])
        ran += 1
    return ran


class WorkerThread:
    """The engine's real Worker (all queues, maintenance included) on a thread of the test."""

    def __init__(self, **kwargs: Any) -> None:
        import threading

        from executions.engine.worker import Worker

        self.worker = Worker(name="test", poll_interval=0.1, **kwargs)
        self.thread = threading.Thread(target=self.worker.run, daemon=True)

    def __enter__(self) -> WorkerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.worker.stop()
        self.thread.join(timeout=15)


def wait_for(check, *, timeout: float = 10.0, interval: float = 0.05):
    """Poll `check` until truthy. A read that meets SQLite's shared-cache table lock (the
    in-memory test database, while the worker thread writes) is simply tried again."""
    import time

    from django.db import OperationalError

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except OperationalError:
            value = None
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
