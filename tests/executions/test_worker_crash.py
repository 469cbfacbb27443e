"""Real worker processes: one is killed (SIGKILL) while a step blocks on a slow model server,
another finishes the execution; each step is recorded once and each tool side effect happens
once. And SIGTERM hands a running execution back instead of losing it.

These tests run everything in subprocesses against their own database (a temporary SQLite
file, or a scratch PostgreSQL database when DATABASE_URL is set), because the pytest database
is not visible to other processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest

from .llm_servers import OpenAIServer

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

SEED = textwrap.dedent(
    """
    import django, json, sys
    django.setup()
    from executions import services
    from executions.models import DemoOrder
    base_url = sys.argv[1]
    ws, _ = services.workspace_get_or_create(slug="crash")
    order_id = f"K-{sys.argv[2]}"
    DemoOrder.objects.get_or_create(workspace=ws, order_id=order_id, defaults={"total": 100})
    agent = services.agent_create(workspace=ws, name=f"crashy-{sys.argv[2]}", type="workflow")
    services.agent_version_create(agent=agent, config={
        "model": {"provider": "openai", "name": "gpt-4o-mini", "base_url": base_url},
        "main": [
            {"tool": "order_refund", "arguments": {"order_id": order_id, "amount": 10}},
            {"prompt": "Is the refund fine?", "unwrap": True},
            {"tool": "order_refund", "arguments": {"order_id": order_id, "amount": 5}},
            {"return": {"note": "$ steps[1].output"}},
        ],
    })
    agent.refresh_from_db()
    execution, _ = services.execution_start(workspace=ws, agent=agent, input={})
    print(json.dumps({"id": str(execution.pk)}))
    """
)

CHECK = textwrap.dedent(
    """
    import django, json, sys, time
    django.setup()
    from executions.models import DemoOrder, Execution
    deadline = time.monotonic() + float(sys.argv[2])
    while True:
        execution = Execution.objects.get(pk=sys.argv[1])
        if execution.status in ("completed", "failed") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    order = DemoOrder.objects.get(order_id=sys.argv[3])
    print(json.dumps({
        "status": execution.status,
        "error": execution.error,
        "output": execution.output,
        "steps": list(execution.transitions.filter(type="step").order_by("seq")
                      .values_list("step_path", flat=True)),
        "refund_count": order.refund_count,
        "refunded": float(order.refunded),
    }))
    """
)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "PYTHONPATH": str(ROOT),
        "EMBEDDED_WORKER": "false",
        "LEASE_SECONDS": "2",
        "REAPER_INTERVAL_SECONDS": "0.5",
        "LOG_LEVEL": "INFO",
    }
    scratch = None
    if os.environ.get("DATABASE_URL"):
        import psycopg

        url = urlparse(os.environ["DATABASE_URL"])
        scratch = f"steward_crash_{uuid.uuid4().hex[:8]}"
        admin = urlunparse(url._replace(path="/postgres"))
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{scratch}"')
        environment["DATABASE_URL"] = urlunparse(url._replace(path=f"/{scratch}"))
    else:
        environment.pop("DATABASE_URL", None)
        environment["SQLITE_PATH"] = str(tmp_path_factory.mktemp("crash") / "db.sqlite3")
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=environment,
        check=True,
        timeout=500,
    )
    yield environment
    if scratch:
        import psycopg

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


def python(env: dict, code: str, *args: str, timeout: float = 300) -> dict:
    done = subprocess.run(
        [PYTHON, "-c", code, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _wait_for_line(log: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)


def worker(env: dict, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            PYTHON,
            "manage.py",
            "worker",
            "--concurrency",
            "2",
            "--poll-interval",
            "0.2",
            "--grace",
            "10",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )


# Worker processes import the model SDKs at start, which takes tens of seconds on a busy
# machine: a generous bound on the whole test, not a speed assertion.
@pytest.mark.timeout(600)
def test_a_killed_worker_loses_nothing_and_repeats_no_recorded_step(env, tmp_path):
    with OpenAIServer([{"hang": True}, {"content": "Looks fine."}]) as server:
        execution_id = python(env, SEED, server.base_url, "kill")["id"]
        first = worker(env, tmp_path / "first.log")
        try:
            assert server.request_started.wait(120), (tmp_path / "first.log").read_text()
            time.sleep(0.2)
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(10)
        second = worker(env, tmp_path / "second.log")
        try:
            result = python(env, CHECK, execution_id, "120", "K-kill", timeout=150)
        finally:
            second.send_signal(signal.SIGTERM)
            exit_code = second.wait(20)
        log = (tmp_path / "second.log").read_text()
        assert result["status"] == "completed", (result, log)
        assert result["steps"] == ["main[0]", "main[1]", "main[2]", "main[3]"]
        assert result["refund_count"] == 2  # the first refund was not repeated
        assert result["refunded"] == 15.0
        assert result["output"] == {"note": "Looks fine."}
        # The killed call was never recorded, so it was made again; nothing else was.
        assert len(server.requests) == 2
        assert "lost its worker" in log
        assert exit_code == 0


@pytest.mark.timeout(600)
def test_sigterm_hands_a_running_execution_back(env, tmp_path):
    with OpenAIServer([{"hang": True}, {"content": "Handed back."}]) as server:
        execution_id = python(env, SEED, server.base_url, "term")["id"]
        first = worker(env, tmp_path / "first.log")
        assert server.request_started.wait(120), (tmp_path / "first.log").read_text()
        began = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert first.wait(15) == 0
        assert time.monotonic() - began < 5  # it did not wait for the slow model
        assert "handed back" in (tmp_path / "first.log").read_text()
        second = worker(env, tmp_path / "second.log")
        try:
            result = python(env, CHECK, execution_id, "120", "K-term", timeout=150)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(20)
        assert result["status"] == "completed", result
        assert result["steps"] == ["main[0]", "main[1]", "main[2]", "main[3]"]
        assert result["output"] == {"note": "Handed back."}


MIXED = textwrap.dedent(
    """
    import django, json, sys
    django.setup()
    from executions import services
    from executions.models import DemoOrder
    ws, _ = services.workspace_get_or_create(slug="crash")
    agent = services.agent_create(workspace=ws, name="mixed", type="workflow")
    services.agent_version_create(agent=agent, config={"main": [
        {"evaluate": {"a": "$ inputs['order'] + '-a'"}},
        {"tool": "order_refund", "arguments": {"order_id": "$ inputs['order']", "amount": 1}},
        {"evaluate": {"b": "$ steps[0].output['a'] + '-b'"}},
        {"sleep": {"seconds": 0.3}},
        {"set": {"seen": "$ steps[2].output['b']"}},
        {"tool": "order_refund", "arguments": {"order_id": "$ inputs['order']", "amount": 2}},
        {"sleep": {"seconds": 0.3}},
        {"tool": "order_refund", "arguments": {"order_id": "$ inputs['order']", "amount": 3}},
        {"return": {"b": "$ steps[2].output['b']"}},
    ]})
    agent.refresh_from_db()
    ids = []
    for i in range(int(sys.argv[1])):
        order = f"M-{i}"
        DemoOrder.objects.get_or_create(workspace=ws, order_id=order, defaults={"total": 100})
        execution, _ = services.execution_start(workspace=ws, agent=agent, input={"order": order})
        ids.append(str(execution.pk))
    print(json.dumps({"ids": ids}))
    """
)

MIXED_CHECK = textwrap.dedent(
    """
    import django, json, sys, time
    django.setup()
    from executions.models import DemoOrder, Execution
    ids = json.loads(sys.argv[1])
    deadline = time.monotonic() + float(sys.argv[2])
    while time.monotonic() < deadline:
        if Execution.objects.filter(pk__in=ids, status="completed").count() == len(ids):
            break
        time.sleep(0.2)
    out = []
    for execution in Execution.objects.filter(pk__in=ids):
        order = DemoOrder.objects.get(order_id=execution.input["order"])
        rows = list(execution.transitions.order_by("seq").values_list("seq", "type", "step_path"))
        out.append({
            "status": execution.status,
            "error": execution.error,
            "output": execution.output,
            "order": execution.input["order"],
            "seqs": [r[0] for r in rows],
            "steps": [r[2] for r in rows if r[1] == "step"],
            "refund_count": order.refund_count,
            "refunded": float(order.refunded),
            "transition_count": execution.transition_count,
        })
    print(json.dumps(out))
    """
)


def _transitions(env: dict) -> int:
    """Rows of history so far, read straight from the database (no Django start-up)."""
    if env.get("DATABASE_URL"):
        import psycopg

        with psycopg.connect(env["DATABASE_URL"]) as conn:
            return conn.execute("SELECT count(*) FROM executions_transition").fetchone()[0]
    import sqlite3

    with sqlite3.connect(env["SQLITE_PATH"], timeout=30) as conn:
        return conn.execute("SELECT count(*) FROM executions_transition").fetchone()[0]


@pytest.mark.timeout(900)
def test_kill_9_at_random_points_never_repeats_a_side_effect_nor_loses_a_record(env, tmp_path):
    import random

    ids = python(env, MIXED, "3", timeout=300)["ids"]
    rng = random.Random(7)
    for round in range(4):
        before = _transitions(env)
        proc = worker(env, tmp_path / f"kill-{round}.log")
        try:
            deadline = time.monotonic() + 300
            while _transitions(env) <= before and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 0.8))  # somewhere inside a step, a record or a tool
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
    last = worker(env, tmp_path / "last.log")
    try:
        results = python(env, MIXED_CHECK, json.dumps(ids), "300", timeout=400)
    finally:
        # The killed workers may have finished every run already, so the check can return
        # before this worker has set up its signal handlers: SIGTERM it once it has started.
        _wait_for_line(tmp_path / "last.log", "started", timeout=120)
        last.send_signal(signal.SIGTERM)
        assert last.wait(60) == 0
    expected_steps = [f"main[{i}]" for i in range(9)]
    for result in results:
        assert result["status"] == "completed", result
        assert result["output"] == {"b": f"{result['order']}-a-b"}
        # Each side effect exactly once: three refunds of 1, 2 and 3.
        assert result["refund_count"] == 3, result
        assert result["refunded"] == 6.0, result
        # Each step recorded once, in order; the history's seq has no gap.
        assert result["steps"] == expected_steps, result
        assert result["seqs"] == list(range(1, result["transition_count"] + 1)), result
