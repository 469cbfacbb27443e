"""The measuring half of bench/api.py (and of its peer, bench/api_peers.py): wrk with a Lua
script per operation, the CPU the server processes and their PostgreSQL backends spent, and one
JSON line per operation."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

CLK_TCK = os.sysconf("SC_CLK_TCK")


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
    if args.warmup:
        # Not counted, for every target alike: fresh processes fill their caches (keys,
        # agents, prepared statements), open their pooled connections and even out their
        # keep-alive connections in the first seconds, which a 6 s run's p99 would carry.
        wrk(base, script, connections=args.connections, seconds=args.warmup, threads=2)
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


def measure_op(
    name: str,
    base: str,
    op: tuple[str, str, dict[str, str], str],
    ids: list[str],
    *,
    args: argparse.Namespace,
    server_pid: int | None,
    database: str | None,
    target: str,
) -> dict:
    """Fresh statistics, then one operation, `op` = (method, path, headers, body), measured."""
    method, path, headers, body = op
    analyze(database)
    script = lua_script(method, path, headers, body, ids)
    return measure(
        name, base, script, args=args, server_pid=server_pid, database=database, target=target
    )
