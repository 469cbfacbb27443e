"""Live-updates benchmark: K logged-in websocket clients on a workspace's executions page.

    .venv/bin/python bench/live.py --clients 100,1000 [--rate 2] [--seconds 15] [--approvals 10]

By default it starts the production layout itself on 127.0.0.1 (PostgreSQL + Redis, uvicorn with
2 worker processes, EMBEDDED_WORKER=false, one `manage.py worker` process), creates a fresh
workspace and user, logs in through /login/ like a browser, and opens K websockets on
`/ws/live/?page=executions&ws=<workspace>&insert=1&since=…` with the session cookie and a
same-origin Origin header — what the list page's htmx ws extension opens.

Per K, while the K clients stay connected:

1. approve → running (first, on an otherwise idle server): workflow executions parked on an
   `approval` step by the worker are approved one at a time through the dashboard's own POST
   (/approvals/<id>/decide/, session + CSRF, as the Approve button sends it). Latency = click
   until the row fragment showing the execution running again reached the clients (each
   delivery, the first and the last client); also the HTTP reply time and the time until the
   worker recorded its first step after the approval.
2. commit → fragment: a separate process (this script with --driver) commits at a steady rate,
   alternating a new execution of an `external` agent (the list inserts a row on top) and a
   pre-created pending execution moved to running through lifecycle.transition() (the row
   changes in place). Each commit concerns a different execution, so every commit maps to
   exactly one (execution, status) row fragment. Latency = wall-clock time a client read the
   fragment minus the time the driver's COMMIT returned. Prints p50/p95/p99 over every
   (commit, client) delivery, the same per commit until the LAST client had it, received /
   expected, and the client process's event-loop lag (high lag: the client is the bottleneck).

Prints one JSON line per measurement. Everything is bounded in count and time (late fragments
are waited for at most --drain seconds, approvals for --approval-timeout each and
--approval-budget in all); only 127.0.0.1 is ever targeted. Server, worker and driver logs, the
commits and what was missed go to /tmp/steward-bench-live/.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.live_fixture import Fixture, login  # noqa: E402  (after the path above)
from bench.live_procs import (  # noqa: E402
    HOST,
    LOG_DIR,
    PYTHON,
    bench_env,
    ensure_database,
    pct,
    progress,
    raise_open_files,
    server_cpu_s,
    spawn,
    stop,
    summary,
    wait_http,
    wait_log,
)

MAX_CLIENTS = 5000
MAX_RATE = 200.0
MAX_SECONDS = 120.0
MAX_APPROVALS = 200

# A row of executions/list.html#row, whether swapped in place or inserted on top.
ROW = re.compile(r'<tr id="exec-([0-9a-f-]{36})" data-status="([a-z_]+)"')


# --- the K clients -------------------------------------------------------------------------------


class Clients:
    """K websockets on the executions page; records when each client first saw each row state."""

    def __init__(self, url: str, origin: str, cookie: str, count: int) -> None:
        self.url, self.origin, self.cookie, self.count = url, origin, cookie, count
        # (execution id, status) -> {client index: receive time}
        self.seen: dict[tuple[str, str], dict[int, float]] = {}
        self.sockets: list = []
        self.tasks: list[asyncio.Task] = []
        self.closed_early = 0
        self.lag: list[float] = []
        self._lag_task: asyncio.Task | None = None

    async def open(self, parallel: int = 50) -> float:
        from websockets.asyncio.client import connect

        began = time.monotonic()
        gate = asyncio.Semaphore(parallel)

        async def one(index: int) -> None:
            async with gate:
                ws = await asyncio.wait_for(
                    connect(
                        self.url,
                        origin=self.origin,
                        additional_headers={"Cookie": self.cookie},
                        open_timeout=30,
                        max_size=2**22,
                    ),
                    timeout=40,
                )
            self.sockets.append(ws)
            self.tasks.append(asyncio.create_task(self._read(index, ws)))

        await asyncio.gather(*(one(i) for i in range(self.count)))
        self._lag_task = asyncio.create_task(self._watch_lag())
        return time.monotonic() - began

    async def _read(self, index: int, ws) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for message in ws:
                now = time.time()
                if isinstance(message, bytes):
                    message = message.decode()
                for match in ROW.finditer(message):
                    self.seen.setdefault((match[1], match[2]), {}).setdefault(index, now)
        except ConnectionClosed:
            pass
        self.closed_early += 1

    async def _watch_lag(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            self.lag.append((time.monotonic() - before - 0.01) * 1000)

    def receipts(self, key: tuple[str, str]) -> dict[int, float]:
        return self.seen.get(key, {})

    async def close(self) -> None:
        if self._lag_task:
            self._lag_task.cancel()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)
        await asyncio.gather(*self.tasks, return_exceptions=True)


# --- the measurements ---------------------------------------------------------------------------


async def measure_commits(clients: Clients, env: dict, args, fixture_ids: dict) -> dict:
    ids_file = LOG_DIR / f"pending-{clients.count}.json"
    ids_file.write_text(json.dumps(fixture_ids["pending"]))
    lag_from = len(clients.lag)
    driver = await asyncio.create_subprocess_exec(
        PYTHON, str(Path(__file__).resolve()), "--driver",
        "--workspace", fixture_ids["workspace"], "--agent", fixture_ids["external"],
        "--ids-file", str(ids_file), "--rate", str(args.rate), "--seconds", str(args.seconds),
        cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=(LOG_DIR / "driver.log").open("a"),
    )  # fmt: skip
    commits: list[dict] = []
    try:
        # Room for a slow start (Django setup in a new process takes a minute on a saturated
        # machine), still bounded.
        async with asyncio.timeout(args.seconds + 180):
            async for line in driver.stdout:
                if line.startswith(b"{"):
                    commits.append(json.loads(line))
            await driver.wait()
    except TimeoutError:
        driver.kill()
        await driver.wait()
    if driver.returncode and not commits:
        raise SystemExit(f"driver failed ({driver.returncode}); see {LOG_DIR / 'driver.log'}")
    # A driver stopped at its time bound (a saturated machine) still measured what it committed.
    stopped_early = driver.returncode != 0

    def missing() -> int:
        return sum(clients.count - len(clients.receipts((c["id"], c["status"]))) for c in commits)

    drain_until = time.monotonic() + args.drain
    while missing() and time.monotonic() < drain_until:
        await asyncio.sleep(0.1)

    every: list[float] = []
    last: list[float] = []
    kinds: dict[str, list[float]] = {"insert": [], "update": []}
    short = [c for c in commits if len(clients.receipts((c["id"], c["status"]))) < clients.count]
    (LOG_DIR / f"commits-{clients.count}.json").write_text(json.dumps(commits))
    if short:
        # What the clients saw of the executions they missed: for diagnosing, not for scoring.
        report = [
            {**c, "got": len(clients.receipts((c["id"], c["status"]))),
             "seen": {k[1]: len(v) for k, v in clients.seen.items() if k[0] == c["id"]}}
            for c in short
        ]  # fmt: skip
        (LOG_DIR / f"missed-{clients.count}.json").write_text(json.dumps(report, indent=1))
    for c in commits:
        got = clients.receipts((c["id"], c["status"]))
        lat = [(t - c["t"]) * 1000 for t in got.values()]
        every.extend(lat)
        kinds[c["kind"]].extend(lat)
        if len(got) == clients.count:
            last.append(max(lat))
    elapsed = (commits[-1]["t"] - commits[0]["t"]) if len(commits) > 1 else 0.0
    lag = clients.lag[lag_from:]
    return {
        "bench": "live",
        "op": "commit_to_fragment",
        "clients": clients.count,
        "commits": len(commits),
        "commits_per_s": round((len(commits) - 1) / elapsed, 1) if elapsed else None,
        "expected": len(commits) * clients.count,
        "received": len(every),
        **summary("", every),
        "max_ms": round(max(every), 1) if every else None,
        **summary("last_client_", last),
        "insert_p95_ms": pct(kinds["insert"], 0.95),
        "update_p95_ms": pct(kinds["update"], 0.95),
        "client_loop_lag_p99_ms": pct(lag, 0.99),
        "driver_stopped_early": stopped_early,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }


async def measure_approvals(
    clients: Clients, base: str, session: str, csrf: str, approvals: list[tuple[str, str]], args
) -> tuple[dict, dict[str, float]]:
    import httpx

    every: list[float] = []
    last: list[float] = []
    first: list[float] = []
    http_ms: list[float] = []
    clicks: dict[str, float] = {}
    failures = 0
    headers = {"X-CSRFToken": csrf, "HX-Request": "true", "Origin": base}
    cookies = {"sessionid": session, "csrftoken": csrf}
    budget_ends = time.monotonic() + args.approval_budget
    async with httpx.AsyncClient(base_url=base, cookies=cookies, timeout=30) as http:
        for approval_id, execution_id in approvals:
            if time.monotonic() > budget_ends:
                break  # a saturated server: what was measured so far tells the story
            headers["Referer"] = f"{base}/approvals/{approval_id}/"
            clicked = time.time()
            reply = await http.post(
                f"/approvals/{approval_id}/decide/", data={"decision": "approve"}, headers=headers
            )
            http_ms.append((time.time() - clicked) * 1000)
            if reply.status_code >= 400:
                failures += 1
                continue
            clicks[execution_id] = clicked
            deadline = time.monotonic() + args.approval_timeout

            def arrived(execution_id: str = execution_id) -> dict[int, float]:
                # Running again; a slow render may already show the run completed.
                got = dict(clients.receipts((execution_id, "completed")))
                got.update(clients.receipts((execution_id, "running")))
                return got

            while len(arrived()) < clients.count and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            got = arrived()
            lat = [(t - clicked) * 1000 for t in got.values()]
            every.extend(lat)
            if lat:
                first.append(min(lat))
            if len(got) == clients.count:
                last.append(max(lat))
            await asyncio.sleep(args.approval_gap)
    result = {
        "bench": "live",
        "op": "approve_to_running",
        "clients": clients.count,
        "approvals": len(http_ms),
        "failed_posts": failures,
        "expected": len(clicks) * clients.count,
        "received": len(every),
        **summary("", every),
        **summary("last_client_", last),
        "first_client_p50_ms": pct(first, 0.50),
        "first_client_p95_ms": pct(first, 0.95),
        "http_p50_ms": pct(http_ms, 0.50),
        "http_p95_ms": pct(http_ms, 0.95),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    return result, clicks


async def run_phase(
    count: int, base: str, session: str, csrf: str, env: dict, args, ids: dict
) -> tuple[list[dict], dict[str, float]]:
    query = urlencode(
        {
            "ws": ids["workspace"],
            "page": "executions",
            "since": ids["since"],
            "insert": "1",
        }
    )
    url = f"ws://{HOST}:{args.port}/ws/live/?{query}"
    clients = Clients(url, base, f"sessionid={session}", count)
    try:
        connect_s = await clients.open()
        progress(f"{count} websockets open in {connect_s:.1f}s")
        await asyncio.sleep(1.0)  # let every consumer finish joining its groups
        if clients.closed_early:
            raise SystemExit(f"{clients.closed_early} websockets were closed by the server")
        # Approvals first, one at a time, on an otherwise idle server; then the commit stream.
        cpu = server_cpu_s(args.server_pid)
        approvals, clicks = await measure_approvals(
            clients, base, session, csrf, ids["approvals"], args
        )
        progress(f"{approvals['approvals']} approvals measured")
        await asyncio.sleep(3.0)  # let the last approval's fan-out finish
        cpu, used = server_cpu_s(args.server_pid), server_cpu_s(args.server_pid) - cpu
        approvals["server_cpu_ms_per_approval"] = round(
            1000 * used / max(1, approvals["approvals"]), 1
        )
        commits = await measure_commits(clients, env, args, ids)
        used = server_cpu_s(args.server_pid) - cpu
        # Per (commit, client) delivery: the server's whole CPU over the commit stream (the
        # renders, the fan-out and the sends) divided by what reached the clients.
        commits["server_cpu_us_per_delivery"] = round(1e6 * used / max(1, commits["received"]), 1)
        commits["server_cpu_ms_per_commit"] = round(1000 * used / max(1, commits["commits"]), 1)
        commits["connect_s"] = round(connect_s, 2)
        progress(f"{commits['commits']} commits measured")
        commits["closed_by_server"] = approvals["closed_by_server"] = clients.closed_early
        return [commits, approvals], clicks
    finally:
        await clients.close()


# --- the driver (a separate process: the commits) ------------------------------------------------


def driver(args) -> None:
    import django

    django.setup()
    from django.db import transaction

    from executions import lifecycle, services
    from executions.models import Agent, Execution, Workspace

    workspace = Workspace.objects.get(pk=args.workspace)
    agent = Agent.objects.get(pk=args.agent)
    pending = json.loads(Path(args.ids_file).read_text())
    # Warm up the publishing path (the publisher thread, its Redis connection) as in a
    # long-lived process, so the first measured commit does not pay for starting it.
    from executions.live import events

    events.send("bench.warmup", {"type": "bench.warmup"})
    time.sleep(0.5)
    total = min(int(args.rate * args.seconds), 2 * len(pending))
    began = time.monotonic()
    for i in range(total):
        wait = began + i / args.rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        stamp: list[float] = []
        with transaction.atomic():
            # Registered first, so it runs right after COMMIT and before the publish hook.
            transaction.on_commit(lambda stamp=stamp: stamp.append(time.time()))
            if i % 2 == 0:
                execution, _ = services.execution_start(
                    workspace=workspace, agent=agent, input={"tick": i}
                )
                kind, status = "insert", "pending"
            else:
                execution = Execution.objects.get(pk=pending[i // 2])
                lifecycle.transition(execution, "running", type="start")
                kind, status = "update", "running"
        line = {"id": str(execution.pk), "status": status, "kind": kind, "t": stamp[0]}
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
    # events.send hands messages to a daemon publisher thread: give it time to send the last
    # ones before this process exits (else the last commits never reach the clients).
    time.sleep(1.0)


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", default="100,1000", help="comma-separated K values")
    parser.add_argument("--rate", type=float, default=2.0, help="commits per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds of commits per K")
    parser.add_argument("--approvals", type=int, default=10, help="approvals clicked per K")
    parser.add_argument("--approval-gap", type=float, default=0.3, help="seconds between clicks")
    parser.add_argument(
        "--approval-timeout", type=float, default=5.0, help="max wait per approval's fragments"
    )
    parser.add_argument(
        "--approval-budget", type=float, default=25.0, help="max seconds of approval clicks"
    )
    parser.add_argument("--drain", type=float, default=10.0, help="max wait for late fragments")
    parser.add_argument("--port", type=int, default=8098)
    parser.add_argument("--driver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workspace", help=argparse.SUPPRESS)
    parser.add_argument("--agent", help=argparse.SUPPRESS)
    parser.add_argument("--ids-file", help=argparse.SUPPRESS)
    args = parser.parse_args()

    args.rate = max(0.1, min(args.rate, MAX_RATE))
    args.seconds = max(1.0, min(args.seconds, MAX_SECONDS))
    if args.driver:
        return driver(args)
    counts = [max(1, min(int(k), MAX_CLIENTS)) for k in args.clients.split(",") if k.strip()]
    args.approvals = max(1, min(args.approvals, MAX_APPROVALS))
    args.approval_timeout = max(0.5, min(args.approval_timeout, 30.0))
    args.drain = max(0.0, min(args.drain, 60.0))
    args.approval_budget = max(1.0, min(args.approval_budget, 120.0))
    raise_open_files(max(counts) + 1024)
    LOG_DIR.mkdir(exist_ok=True)

    env = bench_env()
    os.environ.update(env)
    ensure_database(env["DATABASE_URL"])
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True
    )
    progress("database migrated")
    import django

    django.setup()
    from django.utils import timezone

    server = worker = None
    try:
        base = f"http://{HOST}:{args.port}"
        server = spawn(
            [str(ROOT / ".venv" / "bin" / "uvicorn"), "config.asgi:application",
             "--host", HOST, "--port", str(args.port), "--workers", "2",
             "--log-level", "warning", "--no-access-log",
             # As docs/deploy.md runs it: the same fragment goes to many sockets, and
             # compressing it once per socket cost ~7% of a server process.
             "--ws-per-message-deflate", "false"],
            env, "server.log",
        )  # fmt: skip
        worker = spawn(
            [PYTHON, "manage.py", "worker", "--concurrency", "8", "--name", "bench-live"],
            env,
            "worker.log",
        )
        args.server_pid = server.pid
        wait_http(f"{base}/healthz", server)
        wait_log(LOG_DIR / "worker.log", "started", worker)
        progress("server (2 uvicorn workers) and worker up")

        fixture = Fixture(f"bench-live-{int(time.time())}")
        per_count = max(1, int(args.rate * args.seconds + 1) // 2 + 1)
        plans = []
        for _ in counts:
            plans.append(
                {
                    "workspace": str(fixture.workspace.pk),
                    "external": str(fixture.external.pk),
                    "pending": fixture.pending_executions(per_count),
                    "approvals": fixture.parked_approvals(args.approvals),
                }
            )
        progress(f"fixtures ready: {per_count} pending and {args.approvals} parked per K")
        session, csrf = login(base, fixture.username, fixture.password)
        for count, plan in zip(counts, plans, strict=True):
            plan["since"] = timezone.now().isoformat()
            lines, clicks = asyncio.run(run_phase(count, base, session, csrf, env, args, plan))
            pickups = fixture.worker_pickups(clicks)
            lines[1]["worker_pickup_p50_ms"] = pct(pickups, 0.50)
            lines[1]["worker_pickup_p95_ms"] = pct(pickups, 0.95)
            for line in lines:
                line.update({"rate_per_s": args.rate, "seconds": args.seconds})
                print(json.dumps(line), flush=True)
            time.sleep(3)  # the approved runs finish their sleep before the next K
    finally:
        stop(worker)
        stop(server)


if __name__ == "__main__":
    sys.exit(main())
