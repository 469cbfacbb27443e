"""Process and measurement helpers of bench/live.py: the production layout's processes
(spawn, stop, wait for them), the environment they run in, and the figures' percentiles."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse, urlunparse

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
LOG_DIR = Path("/tmp/steward-bench-live")
HOST = "127.0.0.1"

_T0 = time.monotonic()


def server_cpu_s(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by the server: its master and every worker.
    Unlike latency, CPU per delivery barely moves with what else runs on the machine."""
    if pid is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def progress(text: str) -> None:
    """Progress on stderr, so stdout carries only the JSON lines."""
    print(f"[{time.monotonic() - _T0:6.1f}s] {text}", file=sys.stderr, flush=True)


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * p))], 1)


def summary(prefix: str, values: list[float]) -> dict:
    return {
        f"{prefix}p50_ms": pct(values, 0.50),
        f"{prefix}p95_ms": pct(values, 0.95),
        f"{prefix}p99_ms": pct(values, 0.99),
    }


def raise_open_files(needed: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard, needed)) if hard != resource.RLIM_INFINITY else max(soft, needed)
    if want != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < needed:
        raise SystemExit(f"open-files limit {want} is below the {needed} this run needs")
    return want


def ensure_database(url: str) -> None:
    import psycopg

    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def bench_env() -> dict:
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/steward_bench")
    env.setdefault("REDIS_URL", "redis://127.0.0.1:6379/1")
    # Our own channel-layer prefix: other runs sharing this Redis database do not cross-talk.
    env.setdefault("CHANNEL_PREFIX", f"stewardlive{os.getpid()}")
    env.update(
        {
            "EMBEDDED_WORKER": "false",
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "PYTHONPATH": str(ROOT),
        }
    )
    for key in ("DATABASE_URL", "REDIS_URL"):
        if urlparse(env[key]).hostname not in {HOST, "localhost"}:
            raise SystemExit(f"{key} must point at this machine (127.0.0.1)")
    return env


def spawn(args: list[str], env: dict, log_name: str, **kw) -> subprocess.Popen:
    log = (LOG_DIR / log_name).open("w")
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kw
    )


def stop(proc: subprocess.Popen | None, timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group we created for it
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited; see {LOG_DIR / 'server.log'}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server did not answer {url}")


def wait_log(path: Path, needle: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in (path.read_text() if path.exists() else ""):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"{path.name}: no {needle!r} in time:\n{path.read_text()[-2000:]}")
