"""API benchmark: `wrk` drives the hot paths; one JSON line per operation.

By default it starts the production layout itself on 127.0.0.1 (PostgreSQL + Redis, no embedded
worker, `--server`/`--workers` web processes), creates an agent and a few thousand executions,
then measures each operation for `--seconds` with `--connections` connections, after
`--warmup` seconds of the same load that are not counted (fresh processes fill their caches):

    .venv/bin/python bench/api.py                       # Steward only
    .venv/bin/python bench/api.py --peers               # and Prefect 3's server API, same run
    .venv/bin/python bench/api.py --workers 4 --ops get-execution

Each line: req/s, p50/p99 latency (ms, from wrk), non-2xx and socket errors, and the CPU the
server processes and their PostgreSQL backends spent per request (ms; the machine is shared,
so CPU per request compares better across runs than req/s). wrk is a C load generator
(Debian's `wrk`), so the client costs the server's cores little; Lua scripts send the POST
bodies and cycle through existing ids.

wrk and the CPU accounting are in bench/api_wrk.py; Prefect (`--peers`) in bench/api_peers.py,
from its own virtualenv. Only ever targets 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
from api_peers import run_prefect
from api_profile import profile
from api_wrk import measure_op, wait_up

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
OUT = ROOT / "bench" / "out"

STEWARD_OPS = (
    "create-execution",
    "create-execution-post",
    "get-execution",
    "list-executions",
    "julep-get",
    "moderately-get",
    "discuro-get",
)

# --- Steward ------------------------------------------------------------------------------------


def steward_env(args: argparse.Namespace) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/steward_api_bench")
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/2")
    env["EMBEDDED_WORKER"] = "false"
    env["DEBUG"] = "false"
    # The limiter stays on (its Redis round trip is part of every request) but high enough
    # that the benchmark's one key is never throttled.
    env.setdefault("RATE_LIMIT", "100000000/10 seconds")
    env.setdefault("ALLOWED_HOSTS", "127.0.0.1,localhost")
    return env


def manage(*argv: str, env: dict) -> str:
    return subprocess.run(
        [str(BIN / "python"), "manage.py", *argv],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def server_command(kind: str, workers: int, port: int) -> list[str]:
    bind = ["--host", "127.0.0.1", "--port", str(port)]
    if kind == "uvicorn":
        return [
            str(BIN / "uvicorn"),
            "config.asgi:application",
            *bind,
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
    if kind == "granian":
        # Rust's HTTP server (the `bench` group), for an A/B: docs/decisions.md, "granian".
        return [
            str(BIN / "granian"),
            "--interface",
            "asgi",
            *bind,
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            "config.asgi:application",
        ]
    raise SystemExit(f"unknown server {kind}")


def ensure_database(url: str) -> str:
    name = urlparse(url).path.lstrip("/")
    subprocess.run(
        ["createdb", "-h", "127.0.0.1", "-U", "postgres", name], capture_output=True, check=False
    )
    return name


def seed(base: str, key: str, count: int) -> tuple[str, list[str]]:
    """An external agent (nothing runs it: no worker) and `count` executions to read."""
    headers = {"X-API-Key": key}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        agent = client.post(
            "/api/v1/agents", json={"name": f"bench-{time.time_ns()}", "type": "external"}
        ).json()["data"]
        ids = []
        for i in range(count):
            r = client.post(f"/api/v1/agents/{agent['id']}/execute", json={"input": {"i": i}})
            r.raise_for_status()
            ids.append(r.json()["data"]["id"])
    return agent["id"], ids


def steward_ops(agent_id: str, key: str) -> dict[str, tuple[str, str, dict, str]]:
    native = {"X-API-Key": key, "Content-Type": "application/json"}
    bearer = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    body = '{"input": {"n": {n}}, "metadata": {"bench": "api"}}'
    return {
        "create-execution": ("POST", f"/api/v1/agents/{agent_id}/execute", native, body),
        "create-execution-post": (
            "POST",
            "/api/v1/executions",
            native,
            '{"agent_id": "' + agent_id + '", "input": {"n": {n}}}',
        ),
        "get-execution": ("GET", "/api/v1/executions/{id}", native, ""),
        "list-executions": ("GET", "/api/v1/executions?limit=20", native, ""),
        "julep-get": ("GET", "/julep/executions/{id}", bearer, ""),
        "moderately-get": ("GET", "/moderately/agent-executions/{id}", bearer, ""),
        "discuro-get": ("POST", "/discuro/v1/executions/retrieve?id={id}", bearer, ""),
    }


def run_steward(args: argparse.Namespace) -> None:
    """Every operation against each server in --server (all started at once, on consecutive
    ports, and measured one after the other per operation: an A/B under the same load)."""
    procs: list[subprocess.Popen] = []
    database = None
    targets: list[tuple[str, str, subprocess.Popen | None]] = []
    try:
        if args.url:
            base, key = args.url.rstrip("/"), args.key
            if not key:
                raise SystemExit("--key is required with --url")
            if urlparse(base).hostname not in {"127.0.0.1", "localhost"}:
                raise SystemExit("benchmarks only target this machine (127.0.0.1)")
            targets.append((base, base, None))
        else:
            env = steward_env(args)
            database = ensure_database(env["DATABASE_URL"])
            manage("migrate", "-v0", env=env)
            key = manage("apikey", "create", "--name", "bench", "--workspace", "bench", env=env)
            for i, kind in enumerate(args.server):
                port = args.port + i
                proc = subprocess.Popen(
                    server_command(kind, args.workers, port),
                    cwd=ROOT,
                    env=env,
                    start_new_session=True,
                )
                procs.append(proc)
                targets.append(
                    (f"steward ({kind} x{args.workers})", f"http://127.0.0.1:{port}", proc)
                )
        seeded = []
        for target, base, proc in targets:
            if proc is not None:
                wait_up(f"{base}/healthz", proc)
            agent_id, ids = seed(base, key, args.seed)
            seeded.append((target, base, proc, steward_ops(agent_id, key), ids))
        for name in args.ops:
            for target, base, proc, ops, ids in seeded:
                measure_op(
                    name,
                    base,
                    ops[name],
                    ids,
                    args=args,
                    server_pid=proc.pid if proc else None,
                    database=database,
                    target=target,
                )
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2, help="seconds of load not counted")
    parser.add_argument(
        "--server",
        nargs="+",
        choices=["granian", "uvicorn"],
        default=["uvicorn"],
        help="one or more (an A/B, per operation, in one run)",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--ops", nargs="+", default=list(STEWARD_OPS), choices=STEWARD_OPS)
    parser.add_argument("--seed", type=int, default=1000, help="executions created to read")
    parser.add_argument("--url", help="an already running server (default: start one)")
    parser.add_argument("--key", help="API key for --url")
    parser.add_argument("--port", type=int, default=8250)
    parser.add_argument("--peers", action="store_true", help="also measure Prefect 3's server")
    parser.add_argument("--only-peers", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--profile",
        choices=["get-execution", "create-execution"],
        help="instead of wrk: profile one operation in process (cProfile)",
    )
    parser.add_argument("--profile-requests", type=int, default=500)
    args = parser.parse_args()
    if args.profile:
        return profile(args, steward_env(args))
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.only_peers:
        run_steward(args)
    if args.peers or args.only_peers:
        run_prefect(args)


if __name__ == "__main__":
    sys.exit(main())
