"""The worker's gate (engine/threads.py): only a few run threads compute at once, and a run
waiting on a model gives its place back, so many runs wait on slow models at once while the
database pool serves the few that compute."""

from __future__ import annotations

import threading
import time

import pytest
from django.conf import settings

from executions.engine import worker as worker_module
from executions.engine.threads import Gate, long_wait
from executions.engine.worker import Worker
from executions.lifecycle import TERMINAL
from executions.models import Execution

from .engine_helpers import make_agent, prompt_workflow, start
from .llm_servers import OpenAIServer


def test_a_gate_lets_only_its_size_compute_at_once():
    gate = Gate(2)
    inside, most = [0], [0]
    lock = threading.Lock()
    release = threading.Event()

    def run() -> None:
        with gate.held():
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            release.wait(10)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=run) for _ in range(5)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while inside[0] < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)  # the three others are blocked at the gate, not inside
    assert inside[0] == 2
    release.set()
    for thread in threads:
        thread.join(10)
    assert most[0] == 2


def test_a_long_wait_gives_the_place_back_and_takes_it_again():
    gate = Gate(1)
    waiting, other_ran, done = threading.Event(), threading.Event(), threading.Event()

    def waiter() -> None:
        with gate.held():
            with long_wait():
                waiting.set()
                other_ran.wait(10)  # another run computes while this one waits
            done.set()

    def other() -> None:
        waiting.wait(10)
        with gate.held():
            other_ran.set()

    threads = [threading.Thread(target=waiter), threading.Thread(target=other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert other_ran.is_set() and done.is_set()
    # Both places were handed back: the gate is free again.
    with gate.held():
        pass


def test_long_wait_outside_a_gate_only_hands_back_the_connection():
    with long_wait():
        pass


def test_the_gate_is_sized_from_the_database_pool(monkeypatch):
    databases = {"default": {**settings.DATABASES["default"]}}
    monkeypatch.setattr(settings, "DATABASES", databases)
    databases["default"]["OPTIONS"] = {"pool": {"min_size": 2, "max_size": 16}}
    assert worker_module.gate_size(1000) == 16 - worker_module.RESERVED_CONNECTIONS
    assert worker_module.gate_size(4) == 4  # a small worker is not gated at all
    databases["default"]["OPTIONS"] = {"pool": {"max_size": 3}}
    assert worker_module.gate_size(1000) == 2
    databases["default"]["OPTIONS"] = {}
    assert worker_module.gate_size(1000) == worker_module.GATE_WITHOUT_POOL


@pytest.mark.django_db(transaction=True)
def test_runs_waiting_on_a_model_exceed_the_gate(workspace, monkeypatch):
    """Gate of 2, four runs: the model server answers none until all four calls have arrived,
    which only happens if each run gives its place back while it waits."""
    arrived = threading.Barrier(4, timeout=20)
    monkeypatch.setattr(worker_module, "gate_size", lambda concurrency: 2)
    with OpenAIServer([{"content": "ok"}]) as server:
        respond = server.respond

        def respond_when_all_arrived(handler, body, reply) -> None:
            arrived.wait()
            respond(handler, body, reply)

        server.respond = respond_when_all_arrived
        agent = make_agent(
            workspace,
            "model",
            "workflow",
            prompt_workflow(server.base_url),
        )
        runs = [start(agent, {}) for _ in range(4)]
        worker = Worker(name="gated", concurrency=4, poll_interval=5.0)
        assert worker._gate.size == 2
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while Execution.objects.filter(
                pk__in=[r.pk for r in runs], status__in=TERMINAL
            ).count() < len(runs):
                assert time.monotonic() < deadline, "the runs did not all end"
                time.sleep(0.05)
        finally:
            worker.stop()
            thread.join(15)
    ended = Execution.objects.filter(pk__in=[r.pk for r in runs])
    assert sorted(e.status for e in ended) == ["completed"] * 4
    assert all(e.output == "ok" for e in ended)
