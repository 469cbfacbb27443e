"""Retention at scale: purge a month of the dataset bench/scale.py built, and measure whether
the API and the dashboard stay responsive meanwhile (issue 12).

Clones the scale database (CREATE DATABASE … TEMPLATE, so the dataset itself is kept for
re-measurement), starts the production layout on the clone, measures a few list and detail
cases with one client for `--seconds` as a baseline, then runs the retention purge
(`manage.py purge_executions`, batches of `--batch`) in its own process and measures the same
cases while it deletes. The purge is stopped after `--seconds` too (a month of a 1M dataset
takes longer than a bench run should), and its rate gives the time for the whole month.
Prints one JSON line per phase.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/steward_scale \\
    REDIS_URL=redis://127.0.0.1:6379/3 .venv/bin/python bench/scale_retention.py --port 8303
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import PYTHON, ROOT, _measured, details, session_for, spawn_server  # noqa: E402


def clone(url: str, suffix: str) -> str:
    parsed = urlparse(url)
    source = parsed.path.lstrip("/")
    target = f"{source}_{suffix}"
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{target}" TEMPLATE "{source}"')
    return parsed._replace(path=f"/{target}").geturl()


def drop(url: str) -> None:
    parsed = urlparse(url)
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{parsed.path.lstrip("/")}" WITH (FORCE)')


def probe(base: str, data: dict, seconds: float) -> dict:
    """Requests round-robin over a few cases for `seconds`: p50 / p95 / max per case."""
    ws = _measured(data)
    api = "/api/v1/executions"
    cases = [
        ("API list default", "api", api),
        ("API list status=failed", "api", f"{api}?status=failed"),
        ("API get execution", "api", f"{api}/{data['sample']}"),
        ("dashboard list default", "page", "/executions/"),
    ]
    timings: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    failures = 0
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base, timeout=60) as client:
        while time.monotonic() < deadline:
            for name, face, path in cases:
                headers = {"X-API-Key": ws["key"]} if face == "api" else {}
                cookies = {"sessionid": data["session"]} if face == "page" else {}
                started = time.perf_counter()
                response = client.get(path, headers=headers, cookies=cookies)
                timings[name].append((time.perf_counter() - started) * 1000)
                failures += response.status_code != 200
    out: dict = {"failures": failures}
    for name, values in timings.items():
        values.sort()
        out[name] = {
            "n": len(values),
            "p50_ms": round(statistics.median(values), 1),
            "p95_ms": round(values[max(0, round(0.95 * len(values)) - 1)], 1),
            "max_ms": round(values[-1], 1),
        }
    return out


def purged(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM executions_executiontombstone").fetchone()[0]


def due(url: str) -> int:
    """Executions the purge would delete (finished, older than the workspace's retention)."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FROM executions_execution e JOIN executions_workspace w"
            " ON w.id = e.workspace_id WHERE e.status IN"
            " ('completed','failed','cancelled','rejected')"
            " AND e.created_at < now() - make_interval(days => w.retention_days)"
        ).fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8303)
    parser.add_argument("--seconds", type=float, default=40, help="each phase's length")
    parser.add_argument("--batch", type=int, default=1000, help="executions per transaction")
    parser.add_argument("--keep", action="store_true", help="keep the cloned database")
    args = parser.parse_args()
    source = os.environ.get("DATABASE_URL", "")
    state = Path(f"/tmp/steward-scale-{urlparse(source).path.lstrip('/')}.json")
    if not source.startswith("postgres") or not state.exists():
        raise SystemExit("build the dataset first: bench/scale.py (DATABASE_URL, same database)")
    data = json.loads(state.read_text())
    url = clone(source, "purge")
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        DJANGO_SETTINGS_MODULE="config.settings",
        EMBEDDED_WORKER="false",
        DEBUG="false",
        DEMO_TRAFFIC_RATE="0",
        RATE_LIMIT="1000000/1 second",
    )
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    details(url, data)
    data["session"] = session_for(data["user_id"], data["big"]["workspace_id"])
    month = due(url)
    print(json.dumps({"phase": "dataset", "due_for_purge": month, **data["counts"]}), flush=True)
    server = spawn_server(args.port, env)
    base = f"http://127.0.0.1:{args.port}"
    purge = None
    try:
        print(json.dumps({"phase": "quiet", **probe(base, data, args.seconds)}), flush=True)
        began = time.monotonic()
        purge = subprocess.Popen(
            [PYTHON, "manage.py", "purge_executions", "--batch", str(args.batch)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
        )
        during = probe(base, data, args.seconds)
        done = purge.poll() is not None
        if not done:
            purge.send_signal(signal.SIGINT)
            purge.wait(timeout=60)
        elapsed = time.monotonic() - began
        deleted = purged(url)
        rate = deleted / elapsed if elapsed else 0
        print(json.dumps({"phase": "purging", **during}), flush=True)
        print(
            json.dumps(
                {
                    "phase": "purge",
                    "batch": args.batch,
                    "finished": done,
                    "seconds": round(elapsed, 1),
                    "executions_purged": deleted,
                    "executions_per_second": round(rate),
                    "month_seconds_estimate": round(month / rate) if rate else None,
                    "loadavg": Path("/proc/loadavg").read_text().split()[:3],
                }
            ),
            flush=True,
        )
    finally:
        if purge is not None and purge.poll() is None:
            purge.kill()
        server.terminate()
        server.wait(timeout=30)
        if not args.keep:
            drop(url)


if __name__ == "__main__":
    main()
