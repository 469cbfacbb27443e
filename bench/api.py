"""API benchmark: N concurrent clients for T seconds on create-execution and get-execution.

By default it starts the production layout itself (PostgreSQL + Redis, uvicorn with 2 worker
processes, no embedded worker) on 127.0.0.1, so the figures are reproducible:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/steward_bench \
    REDIS_URL=redis://127.0.0.1:6379/1 .venv/bin/python bench/api.py --clients 32 --seconds 10

Use --url and --key to measure a server that is already running. Prints one JSON line per
operation: req/s, p50/p95/p99 latency in ms, errors. Only ever targets 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")


def manage(*args: str, env: dict) -> str:
    return subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    ).stdout.strip()


def spawn_server(port: int, env: dict) -> subprocess.Popen:
    manage("migrate", "-v0", env=env)
    proc = subprocess.Popen(
        [
            str(ROOT / ".venv" / "bin" / "uvicorn"),
            "config.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "2",
            "--log-level",
            "warning",
            "--no-access-log",
        ],
        cwd=ROOT,
        env=env,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not start")


def prepare(base: str, key: str) -> str:
    headers = {"X-API-Key": key}
    name = f"bench-{int(time.time())}"
    agent = httpx.post(
        f"{base}/api/v1/agents", json={"name": name, "type": "external"}, headers=headers
    ).json()["data"]
    return agent["id"]


async def hammer(
    base: str, key: str, op: str, agent_id: str, clients: int, seconds: float, ids: list[str]
) -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=base, headers={"X-API-Key": key}, limits=limits, timeout=10
    ) as client:

        async def one_client(n: int) -> None:
            nonlocal errors
            i = n
            while time.monotonic() < stop:
                started = time.perf_counter()
                try:
                    if op == "create":
                        r = await client.post(
                            f"/api/v1/agents/{agent_id}/execute", json={"input": {"i": i}}
                        )
                        ok = r.status_code == 201
                        if ok and len(ids) < 5000:
                            ids.append(r.json()["data"]["id"])
                    else:
                        r = await client.get(f"/api/v1/executions/{ids[i % len(ids)]}")
                        ok = r.status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - started) * 1000)
                errors += 0 if ok else 1
                i += clients

        began = time.monotonic()
        await asyncio.gather(*(one_client(n) for n in range(clients)))
        elapsed = time.monotonic() - began
    latencies.sort()

    def pct(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(len(latencies) * p))], 2)

    return {
        "bench": "api",
        "op": f"{op}-execution",
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": len(latencies),
        "req_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
        "errors": errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--url", help="an already running server (default: spawn one)")
    parser.add_argument("--key", help="API key for --url")
    parser.add_argument("--port", type=int, default=8097)
    args = parser.parse_args()

    proc = None
    if args.url:
        if not args.key:
            raise SystemExit("--key is required with --url")
        base, key = args.url.rstrip("/"), args.key
    else:
        env = dict(os.environ)
        env.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/steward_bench")
        env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/1")
        env["EMBEDDED_WORKER"] = "false"
        env["DEBUG"] = "false"
        _ensure_database(env["DATABASE_URL"])
        proc = spawn_server(args.port, env)
        key = manage("apikey", "create", "--name", "bench", "--workspace", "bench", env=env)
        base = f"http://127.0.0.1:{args.port}"
    if "127.0.0.1" not in base and "localhost" not in base:
        raise SystemExit("benchmarks only target this machine (127.0.0.1)")
    try:
        agent_id = prepare(base, key)
        ids: list[str] = []
        for op in ("create", "get"):
            result = asyncio.run(hammer(base, key, op, agent_id, args.clients, args.seconds, ids))
            print(json.dumps(result), flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=10)


def _ensure_database(url: str) -> None:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    subprocess.run(
        [
            "psql",
            "-h",
            parsed.hostname or "127.0.0.1",
            "-U",
            parsed.username or "postgres",
            "-c",
            f"CREATE DATABASE {name}",
        ],
        capture_output=True,
        check=False,
    )


if __name__ == "__main__":
    sys.exit(main())
