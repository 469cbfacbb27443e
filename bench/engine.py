"""Engine benchmark: prints one JSON line.

    .venv/bin/python bench/engine.py [--workers W] [--concurrency C] [--executions N] [--peers]

With `--peers` (after `uv sync --group bench`), the same 3-step workload also runs on Celery 5
(prefork, concurrency 2, Redis broker + result backend) and DBOS Transact 3 (PostgreSQL system
database, workflows called from 8 threads) in the same invocation (bench/engine_peers.py), and
the line carries their figures and Steward's ratios to them.

Runs against PostgreSQL + Redis in the production process layout (separate `manage.py worker`
processes) on a scratch database (DATABASE_URL's, whose name must end in `_bench`; dropped and
recreated each run):

1. throughput: N trivial 3-step workflows (every step recorded) are queued, then W workers ×
   C threads start; executions/s from the workers' start until the last one completed, and the
   per-step overhead (median time a recorded step takes, end to end).
2. idle latency: with the workers idle, executions are started one by one; p50/p95 from
   before `execution_start()` to the moment this client receives the completion, as a client
   would: the `execution.changed` message the worker publishes after its commit, received on
   the workspace's channel group (Redis pub/sub) — an event, no polling interval in the figure
   (Celery's figure is `delay()` → `get()`, whose result backend also answers by pub/sub).
   `engine_latency_ms_*` is the engine's own part: completed_at − created_at as stamped.
3. approve → running: a workflow parked on an approval is approved through the approvals
   service (`approval_decide`, as a reviewer's request does); p50/p95 from before the call to
   the recorded start of the step after the approval (`started_at`, same clock), and to this
   client receiving the completion.
4. slow model: one worker process with a high concurrency runs prompt steps against a local
   model server that takes `--slow-delay` s per reply (1 s by default); the most executions it
   keeps in flight at once, its memory per execution in flight (RSS growth over the idle
   worker), and the CPU per run of the worker, the database's backends and the model server.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine_parts import (  # noqa: E402 - after the path that makes `bench` importable
    BackendCpu,
    Watcher,
    approve_to_running,
    cpu_seconds,
    pct,
    rss_kb,
    scratch_database,
    slow_model,
    start_workers,
    stop,
    tree_rss_kb,
    wait_idle,
    wait_ready,
)

# The peers' workload: step1 x = n*2, step2 y = x+1, step3 returns {"result": y}.
THREE_STEPS = {
    "main": [
        {"evaluate": {"x": "$ inputs['n'] * 2"}},
        {"evaluate": {"y": "$ _['x'] + 1"}},
        {"return": {"result": "$ _['y']"}},
    ]
}


PEERS_SITE = os.environ.get("BENCH_PEERS_SITE", "")


# Between two idle-latency samples, the same for every system (engine_peers.py's DBOS loop
# too): Steward's loop slept 0.1 s where the peers' slept 0.05 s, and a longer idle gap
# leaves caches and CPUs colder for the next sample.
IDLE_GAP_SECONDS = 0.05


def peers_path() -> str:
    return os.pathsep.join(p for p in (str(ROOT), PEERS_SITE) if p)


def run_celery(executions: int, samples: int, redis_url: str) -> dict:
    """Celery 5, prefork pool of 2, Redis broker and result backend; the worker is up before
    the clock starts, and N tasks are sent as fast as `delay()` goes."""
    env = {**os.environ, "BENCH_CELERY_REDIS": redis_url, "PYTHONPATH": peers_path()}
    os.environ["BENCH_CELERY_REDIS"] = redis_url
    if PEERS_SITE and PEERS_SITE not in sys.path:
        sys.path.append(PEERS_SITE)  # after the venv: its own packages win in this process
    from bench import engine_peers

    engine_peers.app.conf.broker_url = redis_url
    engine_peers.app.conf.result_backend = redis_url
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "bench.engine_peers",
            "worker",
            "--pool",
            "prefork",
            "--concurrency",
            "2",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel",
            "WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        engine_peers.three_steps.delay(0).get(timeout=120)  # up and warm
        peak = tree_rss_kb(proc.pid)
        began = time.monotonic()
        results = [engine_peers.three_steps.delay(n) for n in range(executions)]
        for i, result in enumerate(results):
            result.get(timeout=300)
            if i % 200 == 0:
                peak = max(peak, tree_rss_kb(proc.pid))
        elapsed = time.monotonic() - began
        latencies = []
        for n in range(samples):
            t0 = time.monotonic()
            engine_peers.three_steps.delay(n).get(timeout=30)
            latencies.append((time.monotonic() - t0) * 1000)
            time.sleep(IDLE_GAP_SECONDS)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {
        "executions_per_sec": round(executions / elapsed, 1),
        "idle_latency_ms_p50": pct(latencies, 0.5),
        "peak_rss_mb": round(peak / 1024, 1),
    }


def run_dbos(base_url: str, executions: int, samples: int) -> dict:
    """DBOS Transact 3 in its own process on its own PostgreSQL system database."""
    url = scratch_database(base_url, urlparse(base_url).path.lstrip("/") + "_dbos")
    sqlalchemy_url = url.replace("postgres://", "postgresql://", 1)
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "engine_peers.py"),
            "dbos",
            sqlalchemy_url,
            str(executions),
            str(samples),
            "8",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": peers_path()},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise SystemExit(f"dbos peer failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--executions", type=int, default=2000)
    parser.add_argument("--latency-samples", type=int, default=40)
    parser.add_argument("--approval-samples", type=int, default=30)
    parser.add_argument("--slow-executions", type=int, default=150)
    parser.add_argument("--slow-concurrency", type=int, default=100)
    parser.add_argument(
        "--slow-delay",
        type=float,
        default=1.0,
        help="seconds per model reply; in flight = start rate x delay, so 1,000 in flight at "
        "1 s per reply needs 1,000 starts/s: a longer delay measures the memory of 1,000",
    )
    parser.add_argument("--peers", action="store_true", help="also run Celery and DBOS")
    parser.add_argument(
        "--submit-threads",
        type=int,
        default=8,
        help="client threads for the submitted-while-running throughput (0: skip it)",
    )
    parser.add_argument("--skip-slow", action="store_true", help="skip the slow-model part")
    args = parser.parse_args()

    base = (
        os.environ.get("DATABASE_URL") or "postgres://postgres@127.0.0.1:5432/steward_engine_bench"
    )
    # The URL's own database is the scratch one (so two benches can run on their own), dropped and
    # made again: only a name ending in `_bench` is taken, so a real database is never dropped.
    scratch = urlparse(base).path.lstrip("/")
    if not scratch.endswith("_bench"):
        raise SystemExit(
            f"DATABASE_URL: the database is dropped and recreated; name it *_bench, not {scratch!r}"
        )
    database_url = scratch_database(base, scratch)
    redis_url = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/1"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "EMBEDDED_WORKER": "false",
        "LOG_LEVEL": "WARNING",
        "DEBUG": "false",  # DEBUG keeps every query in memory: not a production layout
        "ALLOWED_HOSTS": "*",
        "PYTHONPATH": str(ROOT),
    }
    os.environ.update(env)
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=env,
        check=True,
    )

    import django

    django.setup()

    from django.utils import timezone

    from executions import services
    from executions.engine import queue
    from executions.models import Execution, Transition

    log_dir = Path("/tmp/steward-bench")
    log_dir.mkdir(exist_ok=True)
    workspace, _ = services.workspace_get_or_create(slug="bench")
    agent = services.agent_create(workspace=workspace, name="three-steps", type="workflow")
    services.agent_version_create(agent=agent, config=THREE_STEPS)
    agent.refresh_from_db()

    # 1. throughput -------------------------------------------------------------------------
    for n in range(args.executions):
        services.execution_start(workspace=workspace, agent=agent, input={"n": n})
    # Held back until the workers are warm (started, and their SDK preload done: the CPU of
    # start-up is not the CPU of a run), as Celery's and DBOS's clocks start once warm.
    Execution.objects.filter(agent=agent).update(runnable_at=None)
    procs = start_workers(env, args.workers, args.concurrency, log_dir)
    wait_ready(procs, log_dir)
    wait_idle(procs)
    worker_cpu0 = sum(cpu_seconds(p.pid) for p in procs)
    backends = BackendCpu(database_url)
    began = time.monotonic()
    Execution.objects.filter(agent=agent).update(runnable_at=timezone.now())
    queue.wake()
    peak_rss = 0
    while Execution.objects.filter(agent=agent, status="completed").count() < args.executions:
        peak_rss = max(peak_rss, sum(rss_kb(p.pid) for p in procs))
        backends.notice()
        if time.monotonic() - began > 600:
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - began
    # CPU per execution: survives a loaded machine better than executions/s. The database's
    # figure includes this script's own polling queries (one count per 50 ms).
    worker_cpu = sum(cpu_seconds(p.pid) for p in procs) - worker_cpu0
    db_cpu = backends.seconds()
    done = Execution.objects.filter(agent=agent, status="completed").count()
    steps = Transition.objects.filter(execution__agent=agent, type="step")
    step_ms = [
        (t.ended_at - t.started_at).total_seconds() * 1000 for t in steps.order_by("?")[:2000]
    ]

    # 1b. throughput with the client in the clock: N started while the workers run, from
    # `--submit-threads` client threads (DBOS's workflows are called from 8), first start to
    # last completion — the peers' clocks include their clients' submissions too.
    submitted = {}
    if args.submit_threads:
        submitted = submit_live(workspace, args.executions, args.submit_threads)

    # 2. idle latency -------------------------------------------------------------------------
    watcher = Watcher(workspace.pk)
    time.sleep(1.0)
    latencies, engine_ms, missed = [], [], 0
    for n in range(args.latency_samples):
        t0 = time.monotonic()
        execution, _ = services.execution_start(workspace=workspace, agent=agent, input={"n": n})
        seen = watcher.wait(execution.pk, "completed")
        if seen is None:
            missed += 1
        else:
            latencies.append((seen - t0) * 1000)
        row = Execution.objects.filter(pk=execution.pk).values("completed_at", "created_at")[0]
        if row["completed_at"]:
            engine_ms.append((row["completed_at"] - row["created_at"]).total_seconds() * 1000)
        time.sleep(IDLE_GAP_SECONDS)  # the workers idle again, as the peers' between samples

    # 3. approve -> running -------------------------------------------------------------------
    approve = approve_to_running(workspace, watcher, args.approval_samples)
    stop(procs)

    # 3. slow model: executions kept in flight by one worker process ---------------------------
    slow_figures: dict = {}
    if not args.skip_slow:
        slow_figures = slow_model(env, workspace, log_dir, args)

    result = {
        "bench": "engine",
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
        "workers": args.workers,
        "concurrency": args.concurrency,
        "executions": args.executions,
        "completed": done,
        "seconds": round(elapsed, 2),
        "executions_per_sec": round(done / elapsed, 1) if elapsed else None,
        "worker_cpu_ms_per_execution": round(worker_cpu * 1000 / done, 2) if done else None,
        "db_cpu_ms_per_execution": round(db_cpu * 1000 / done, 2) if done else None,
        **submitted,
        "step_overhead_ms_p50": pct(step_ms, 0.5),
        "idle_latency_ms_p50": pct(latencies, 0.5),
        "idle_latency_ms_p95": pct(latencies, 0.95),
        "idle_latency_missed": missed,
        "engine_latency_ms_p50": pct(engine_ms, 0.5),
        "engine_latency_ms_p95": pct(engine_ms, 0.95),
        **approve,
        "peak_rss_mb": round(peak_rss / 1024, 1),
        **slow_figures,
    }
    if args.peers:
        # Steward's own figures first: a peer that fails must not take them with it.
        print(json.dumps({**result, "peers": "running"}), file=sys.stderr, flush=True)
        peers = {
            "celery": run_celery(args.executions, args.latency_samples, redis_url),
            "dbos": run_dbos(base, args.executions, args.latency_samples),
        }
        for name, figures in peers.items():
            result[name] = figures
            result[f"vs_{name}"] = {
                "executions_per_sec_ratio": _ratio(
                    result["executions_per_sec"], figures["executions_per_sec"]
                ),
                # The same, with Steward's client in the clock (as the peers' are).
                "submitted_executions_per_sec_ratio": _ratio(
                    result.get("submitted_executions_per_sec"), figures["executions_per_sec"]
                ),
                # Above 1 means Steward is faster (the peer's latency over Steward's).
                "idle_p50_speedup": _ratio(
                    figures["idle_latency_ms_p50"], result["idle_latency_ms_p50"]
                ),
                "peak_rss_ratio": _ratio(result["peak_rss_mb"], figures["peak_rss_mb"]),
            }
    print(json.dumps(result))


def submit_live(workspace, executions: int, threads: int) -> dict:
    """N executions started through `execution_start` from `threads` client threads while the
    workers run; executions/s from the first start to the last completion."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections

    from executions import services
    from executions.models import Execution

    agent = services.agent_create(workspace=workspace, name="three-live", type="workflow")
    services.agent_version_create(agent=agent, config=THREE_STEPS)
    agent.refresh_from_db()

    def start(chunk: range) -> None:
        for n in chunk:
            services.execution_start(workspace=workspace, agent=agent, input={"n": n})
        connections.close_all()

    chunks = [range(i, executions, threads) for i in range(threads)]
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(start, chunks))
    submitted = time.monotonic() - began
    while Execution.objects.filter(agent=agent, status="completed").count() < executions:
        if time.monotonic() - began > 600:
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - began
    done = Execution.objects.filter(agent=agent, status="completed").count()
    return {
        "submitted_executions_per_sec": round(done / elapsed, 1) if elapsed else None,
        "submit_threads": threads,
        "submit_seconds": round(submitted, 2),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


if __name__ == "__main__":
    main()
