"""API benchmark: `wrk` drives the hot paths; one JSON line per operation.

By default it starts the production layout itself on 127.0.0.1 (PostgreSQL + Redis, no embedded
worker, `--server`/`--workers` web processes), creates an agent and a few thousand executions,
then measures each operation for `--seconds` with `--connections` connections:

    .venv/bin/python bench/api.py                       # Steward only
    .venv/bin/python bench/api.py --peers               # and Prefect 3's server API, same run
    .venv/bin/python bench/api.py --workers 4 --ops get-execution

Each line: req/s, p50/p99 latency (ms, from wrk), non-2xx and socket errors, and the CPU the
server processes and their PostgreSQL backends spent per request (ms; the machine is shared,
so CPU per request compares better across runs than req/s). wrk is a C load generator
(Debian's `wrk`), so the client costs the server's cores little; Lua scripts send the POST
bodies and cycle through existing ids.

Prefect (`--peers`) runs from its own virtualenv (bench/out/peers-venv, created on first use):
Prefect 3 pins websockets below 17, which would downgrade the runtime's own, so it cannot share
the project's lock. Only ever targets 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
from api_profile import profile

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
OUT = ROOT / "bench" / "out"
PEERS_VENV = OUT / "peers-venv"
PREFECT_SPEC = "prefect>=3.9,<4"
CLK_TCK = os.sysconf("SC_CLK_TCK")

STEWARD_OPS = (
    "create-execution",
    "create-execution-post",
    "get-execution",
    "list-executions",
    "julep-get",
    "moderately-get",
    "discuro-get",
)

# --- wrk ----------------------------------------------------------------------------------------

LUA_COMMON = r"""
local counter = 0
local ids = {%(ids)s}
local headers = {%(headers)s}
request = function()
  counter = counter + 1
  local id = ids[(counter %% math.max(#ids, 1)) + 1]
  local path = string.gsub("%(path)s", "{id}", id or "")
  local body = nil
  if "%(method)s" == "POST" then
    body = string.gsub('%(body)s', "{n}", tostring(counter))
  end
  return wrk.format("%(method)s", path, headers, body)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON {\"requests\": %%d, \"duration_us\": %%d, \"p50_us\": %%d, \"p90_us\": %%d, " ..
    "\"p99_us\": %%d, \"non2xx\": %%d, \"socket_errors\": %%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def lua_script(method: str, path: str, headers: dict[str, str], body: str, ids: list[str]) -> str:
    def q(s: str) -> str:
        return s.replace("\\", "\\\\").replace('"', '\\"')

    return LUA_COMMON % {
        "ids": ", ".join(f'"{i}"' for i in ids),
        "headers": ", ".join(f'["{q(k)}"] = "{q(v)}"' for k, v in headers.items()),
        "path": q(path),
        "method": method,
        "body": body.replace("'", "\\'"),
    }


def wrk(base: str, script: str, *, connections: int, seconds: float, threads: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    try:
        result = subprocess.run(
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, int(seconds))}s",
                "--timeout",
                "10s",
                "-s",
                fh.name,
                base,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    finally:
        os.unlink(fh.name)
    for line in result.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[8:])
    raise RuntimeError(f"wrk printed no summary:\n{result.stdout}\n{result.stderr}")


# --- CPU accounting -----------------------------------------------------------------------------


def tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        p, pp = map(int, line.split())
        children.setdefault(pp, []).append(p)
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / CLK_TCK


def backend_pids(database: str) -> list[int]:
    out = subprocess.run(
        [
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-Atc",
            f"SELECT pid FROM pg_stat_activity WHERE datname = '{database}'",
        ],
        capture_output=True,
        text=True,
    ).stdout
    return [int(p) for p in out.split()]


def analyze(database: str | None) -> None:
    """Fresh planner statistics before each operation, as autovacuum keeps them in production:
    this machine's PostgreSQL runs with autovacuum off, and a workspace that grew by thousands
    of runs since the last ANALYZE gets a plan for 76 rows (a hash join and a sort of every run
    instead of an index scan of the first 20: 24 ms instead of ~1 ms for the list)."""
    if database is None:
        return
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", database, "-qc", "ANALYZE"],
        check=True,
    )


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def measure(
    name: str,
    base: str,
    script: str,
    *,
    args: argparse.Namespace,
    server_pid: int | None,
    database: str | None,
    target: str,
) -> dict:
    pids = (tree(server_pid) if server_pid else []) + (backend_pids(database) if database else [])
    before = cpu_seconds(pids)
    stats = wrk(base, script, connections=args.connections, seconds=args.seconds, threads=2)
    pids = (tree(server_pid) if server_pid else []) + (backend_pids(database) if database else [])
    spent = cpu_seconds(pids) - before
    seconds = stats["duration_us"] / 1e6
    line = {
        "bench": "api",
        "target": target,
        "op": name,
        "connections": args.connections,
        "seconds": round(seconds, 2),
        "requests": stats["requests"],
        "req_per_s": round(stats["requests"] / seconds, 1),
        "p50_ms": round(stats["p50_us"] / 1000, 2),
        "p90_ms": round(stats["p90_us"] / 1000, 2),
        "p99_ms": round(stats["p99_us"] / 1000, 2),
        "non_2xx": stats["non2xx"],
        "socket_errors": stats["socket_errors"],
        "cpu_ms_per_req": round(spent * 1000 / max(stats["requests"], 1), 3) if pids else None,
        "loadavg_1m": loadavg(),
    }
    print(json.dumps(line), flush=True)
    return line


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


def wait_up(url: str, proc: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            time.sleep(0.3)
    raise SystemExit(f"server at {url} did not start")


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
                method, path, headers, body = ops[name]
                analyze(database)
                measure(
                    name,
                    base,
                    lua_script(method, path, headers, body, ids),
                    args=args,
                    server_pid=proc.pid if proc else None,
                    database=database,
                    target=target,
                )
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)


# --- Prefect 3 (peer) ---------------------------------------------------------------------------


def peers_python() -> Path:
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        uv = shutil.which("uv") or "uv"
        subprocess.run([uv, "venv", "-q", str(PEERS_VENV), "--python", "3.12"], check=True)
        subprocess.run(
            [uv, "pip", "install", "-q", "--python", str(python), PREFECT_SPEC], check=True
        )
    return python


def run_prefect(args: argparse.Namespace) -> None:
    python = peers_python()
    database = "prefect_api_bench"
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", database])
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", database], check=True)
    home = OUT / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    port = args.port + 10  # past the Steward servers of an A/B
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": (
            f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
        ),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_SERVER_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [
            str(python),
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-ui",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(f"{base}/api/health", proc, seconds=120)
        with httpx.Client(base_url=base, timeout=30) as client:
            flow = client.post("/api/flows/", json={"name": "bench"}).json()
            ids = []
            for i in range(args.seed):
                r = client.post(
                    "/api/flow_runs/", json={"flow_id": flow["id"], "parameters": {"i": i}}
                )
                r.raise_for_status()
                ids.append(r.json()["id"])
        headers = {"Content-Type": "application/json"}
        ops = {
            "create-execution": (
                "POST",
                "/api/flow_runs/",
                '{"flow_id": "' + flow["id"] + '", "parameters": {"n": {n}}}',
            ),
            "get-execution": ("GET", "/api/flow_runs/{id}", ""),
        }
        for name, (method, path, body) in ops.items():
            if name not in args.ops:
                continue
            analyze(database)
            measure(
                name,
                base,
                lua_script(method, path, headers, body, ids),
                args=args,
                server_pid=proc.pid,
                database=database,
                target="prefect 3 server",
            )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=10)
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
