"""Parts of bench/engine.py: the processes it starts and measures (workers, their CPU and
memory, the database's backends), the client that watches executions end (channel layer), the
approve → running case and the slow-model case (runs in flight on one worker)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parents[1]

APPROVE_THEN_STEPS = {
    "main": [
        {"approval": {"title": "Go on?"}},
        {"evaluate": {"x": "$ inputs['n'] * 2"}},
        {"return": {"result": "$ _['x']"}},
    ]
}


class Watcher:
    """Receives the workspace's `execution.changed` messages (the channel layer, as the
    dashboard does) on a thread of its own and notes when each execution reached a status."""

    def __init__(self, workspace_id) -> None:
        self.group = f"workspace.{workspace_id}.executions"
        self.seen: dict[tuple[str, str], float] = {}
        self.cond = threading.Condition()
        ready = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._listen(ready)), daemon=True)
        self.thread.start()
        if not ready.wait(10):
            raise SystemExit("could not subscribe to the channel layer")

    async def _listen(self, ready: threading.Event) -> None:
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(self.group, channel)
        ready.set()
        while True:
            message = await layer.receive(channel)
            if message.get("type") != "execution.changed":
                continue
            now = time.monotonic()
            with self.cond:
                self.seen.setdefault((message["execution_id"], message["status"]), now)
                self.cond.notify_all()

    def wait(self, execution_id, status: str, timeout: float = 10.0) -> float | None:
        key = (str(execution_id), status)
        with self.cond:
            self.cond.wait_for(lambda: key in self.seen, timeout=timeout)
            return self.seen.get(key)


def scratch_database(base_url: str, name: str) -> str:
    import psycopg

    url = urlparse(base_url)
    admin = urlunparse(url._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunparse(url._replace(path=f"/{name}"))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend_pids(database_url: str) -> list[int]:
    """The PostgreSQL backends serving the scratch database (the workers' pools)."""
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid()"
        ).fetchall()
    return [row[0] for row in rows]


class BackendCpu:
    """The CPU of the PostgreSQL backends serving a database over a window: those open when it
    starts, and those noticed while it runs (a backend opened meanwhile starts at 0). A backend
    gone by the end is left out (its CPU is no longer in /proc)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.start = {pid: cpu_seconds(pid) for pid in backend_pids(database_url)}

    def notice(self) -> None:
        for pid in backend_pids(self.database_url):
            self.start.setdefault(pid, 0.0)

    def seconds(self) -> float:
        return sum(now - before for pid, before in self.start.items() if (now := cpu_seconds(pid)))


def rss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


class ModelCalls:
    """Counts the model server's requests in progress (the most at once): the runs that are
    waiting on the model, as the model sees them."""

    def __init__(self, server) -> None:
        self.now = self.peak = 0
        self._lock = threading.Lock()
        self._respond = server.respond
        server.respond = self.respond

    def respond(self, handler, body, reply) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            self._respond(handler, body, reply)
        finally:
            with self._lock:
                self.now -= 1


def thread_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        return 0


def tree_rss_kb(pid: int) -> int:
    """RSS of a process and its children (Celery's prefork pool)."""
    total = rss_kb(pid)
    for child in Path("/proc").iterdir():
        if not child.name.isdigit():
            continue
        try:
            stat = (child / "stat").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            total += rss_kb(int(child.name))
    return total


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


# The peers installed outside the venv (`uv pip install --target DIR "celery[redis]" dbos`),
# when `uv sync` keeps removing the optional group from a shared venv.
def start_workers(env: dict, count: int, concurrency: int, log_dir: Path) -> list[subprocess.Popen]:
    procs = []
    for i in range(count):
        log = (log_dir / f"worker-{i}.log").open("w")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "manage.py",
                    "worker",
                    "--concurrency",
                    str(concurrency),
                    "--name",
                    f"bench{i}",
                    "--queues",
                    "executions",
                ],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    return procs


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def wait_ready(procs: list[subprocess.Popen], log_dir: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    for i, _ in enumerate(procs):
        log = log_dir / f"worker-{i}.log"
        while "started" not in (log.read_text() if log.exists() else ""):
            if time.monotonic() > deadline:
                raise SystemExit(f"worker {i} did not start: {log.read_text()}")
            time.sleep(0.05)


def wait_idle(procs: list[subprocess.Popen], timeout: float = 120) -> None:
    """Until the processes' CPU over half a second is under 5 % (start-up work done)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = sum(cpu_seconds(p.pid) for p in procs)
        time.sleep(0.5)
        if sum(cpu_seconds(p.pid) for p in procs) - before < 0.025 * len(procs):
            return


def approve_to_running(workspace, watcher: Watcher, samples: int) -> dict:
    """Park `samples` executions on an approval one after another, approve each through the
    approvals service as a reviewer, and time the worker picking it up again."""
    from django.contrib.auth import get_user_model

    from approvals import services as approval_services
    from approvals.models import Approval
    from executions import services
    from executions.lifecycle import Actor
    from executions.models import Transition

    if samples <= 0:
        return {}
    user = get_user_model().objects.create_user(username="bench-reviewer", password="x")
    services.membership_set(workspace=workspace, user=user, role="admin")
    actor = Actor.for_user(user)
    agent = services.agent_create(workspace=workspace, name="approve-then", type="workflow")
    services.agent_version_create(agent=agent, config=APPROVE_THEN_STEPS)
    agent.refresh_from_db()
    to_step, to_done, missed = [], [], 0
    for n in range(samples):
        execution, _ = services.execution_start(workspace=workspace, agent=agent, input={"n": n})
        if watcher.wait(execution.pk, "awaiting_approval") is None:
            missed += 1
            continue
        approval = Approval.objects.get(execution_id=execution.pk, status="pending")
        time.sleep(0.1)  # the worker is idle again, as when a reviewer comes by
        t0, wall0 = time.monotonic(), datetime.now(UTC)
        approval_services.approval_decide(approval=approval, actor=actor, decision="approve")
        seen = watcher.wait(execution.pk, "completed")
        if seen is None:
            missed += 1
            continue
        to_done.append((seen - t0) * 1000)
        step = Transition.objects.get(execution_id=execution.pk, step_path="main[1]", type="step")
        to_step.append((step.started_at - wall0).total_seconds() * 1000)
    return {
        "approval_samples": samples,
        "approve_to_next_step_ms_p50": pct(to_step, 0.5),
        "approve_to_next_step_ms_p95": pct(to_step, 0.95),
        "approve_to_done_seen_ms_p50": pct(to_done, 0.5),
        "approve_to_done_seen_ms_p95": pct(to_done, 0.95),
        "approval_missed": missed,
    }


def slow_model(env: dict, workspace, log_dir: Path, args) -> dict:
    """One worker process with a high concurrency runs prompt steps against a local model
    server that takes `--slow-delay` s per reply (1 s by default): the most executions it keeps
    in flight at once, its memory per execution in flight (RSS growth over the idle worker),
    and the CPU per run of the worker, of the database and of the model server."""
    from django.utils import timezone

    from executions import services
    from executions.engine import queue
    from executions.models import Execution
    from tests.executions.llm_servers import OpenAIServer

    with OpenAIServer([{"content": "ok", "delay": args.slow_delay}]) as server:
        # socketserver listens with a backlog of 5: a thousand calls at once would overflow it
        # and wait out TCP's SYN retries (1 s, 3 s…), measuring the harness, not the worker.
        server.httpd.socket.listen(4096)
        calls = ModelCalls(server)
        slow = services.agent_create(workspace=workspace, name="slow-model", type="workflow")
        services.agent_version_create(
            agent=slow,
            config={
                "model": {"provider": "openai", "name": "bench-slow", "base_url": server.base_url},
                "main": [{"prompt": "hello", "unwrap": True}],
            },
        )
        slow.refresh_from_db()
        # Queued before the worker starts and held back (not runnable), then released at once:
        # created one by one while the worker runs, this script's own start rate (30-100/s on
        # a loaded machine) would bound the number in flight, not the worker.
        for n in range(args.slow_executions):
            services.execution_start(workspace=workspace, agent=slow, input={"n": n})
        Execution.objects.filter(agent=slow).update(runnable_at=None)
        [proc] = start_workers(env, 1, args.slow_concurrency, log_dir)
        wait_ready([proc], log_dir)
        # Until the SDKs and price tables are loaded (providers.preload): a fixed 3 s was not
        # enough on a busy machine, and the import's CPU then counted against the runs.
        wait_idle([proc])
        idle_rss = rss_kb(proc.pid)
        cpu0 = cpu_seconds(proc.pid)
        # The rest of the machine's CPU per run: the database's backends, and this process (the
        # model server's threads, its connections, and this loop's polling).
        backends = BackendCpu(env["DATABASE_URL"])
        own0 = time.process_time()
        Execution.objects.filter(agent=slow).update(runnable_at=timezone.now())
        queue.wake()
        peak_inflight, peak_rss, peak_at, peak_threads = 0, idle_rss, 0.0, 0
        began = polled = time.monotonic()
        while time.monotonic() - began < 300:
            if time.monotonic() - polled > 1.0:  # a connection per look: not every 50 ms
                polled = time.monotonic()
                backends.notice()
            inflight = (
                Execution.objects.filter(agent=slow, status="running")
                .exclude(lease_owner="")
                .count()
            )
            if inflight >= peak_inflight:
                peak_inflight, peak_at = inflight, time.monotonic() - began
                peak_rss = max(peak_rss, rss_kb(proc.pid))
                peak_threads = max(peak_threads, thread_count(proc.pid))
            if (
                Execution.objects.filter(agent=slow, status__in=["completed", "failed"]).count()
                >= args.slow_executions
            ):
                break
            time.sleep(0.05)
        slow_done = Execution.objects.filter(agent=slow, status="completed").count()
        slow_seconds = time.monotonic() - began
        slow_cpu = cpu_seconds(proc.pid) - cpu0
        own_cpu = time.process_time() - own0
        db_cpu = backends.seconds()
        stop([proc])
    # What a starved pool or a stalled renewal cost (each a run paused or re-claimed).
    log = (log_dir / "worker-0.log").read_text()
    return {
        "slow_model_executions": args.slow_executions,
        "slow_model_completed": slow_done,
        "slow_model_seconds": round(slow_seconds, 1),
        "slow_model_concurrency": args.slow_concurrency,
        "slow_model_delay_s": args.slow_delay,
        "max_in_flight_one_process": peak_inflight,
        "worker_rss_idle_mb": round(idle_rss / 1024, 1),
        "worker_rss_peak_mb": round(peak_rss / 1024, 1),
        "memory_per_in_flight_kb": round((peak_rss - idle_rss) / peak_inflight, 1)
        if peak_inflight
        else None,
        # Runs waiting on the model at once, counted by the model server: the runs in flight
        # above also count those waiting for the worker (their start or end to be written).
        "slow_model_calls_at_once_peak": calls.peak,
        "slow_seconds_to_peak": round(peak_at, 2),
        "slow_worker_threads_peak": peak_threads,
        "slow_worker_cpu_ms_per_run": round(slow_cpu * 1000 / max(1, slow_done), 2),
        "slow_db_cpu_ms_per_run": round(db_cpu * 1000 / max(1, slow_done), 2),
        "slow_model_server_cpu_ms_per_run": round(own_cpu * 1000 / max(1, slow_done), 2),
        "slow_db_pauses": log.count("paused by a database error"),
        "slow_leases_lost": log.count("lost its worker"),
    }
