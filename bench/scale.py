"""Scale benchmark: every list, page and chart on a big history (issue 12, DESIGN.md §11).

Builds a dataset in a scratch PostgreSQL database with SQL (generate_series, not the ORM):
`--size` executions (default 1,000,000) with ten transitions each on average, time-ordered
UUIDv7 ids like the app's, a realistic status mix, metadata keys, sessions and costs, one
execution with 10,000 transitions, ~0.2% of runs parked on a pending approval, in 3
workspaces. Then it starts the production layout (uvicorn, 2 processes, PostgreSQL + Redis) on
127.0.0.1 and measures each API and dashboard case with one client, printing one JSON line per
case (p50 / p95 in ms, the target, within or not) and the SQL plan of the slowest query of any
case over its target.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/steward_scale \\
    REDIS_URL=redis://127.0.0.1:6379/3 .venv/bin/python bench/scale.py --port 8300

`--size 2000 --rounds 2` is the quick run the test suite uses so this script cannot rot.
The database named in DATABASE_URL is dropped and rebuilt unless --reuse is given.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode, urlparse

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale_sql import APPROVALS, DURATIONS, EXECUTIONS, ROLLUP, TRANSITIONS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PYTHON = str(ROOT / ".venv" / "bin" / "python")
WORKSPACES = ("acme", "globex", "initech")
AGENTS_PER_WORKSPACE = 12
LIST_TARGET_MS, DETAIL_TARGET_MS = 50.0, 100.0


def manage(*args: str, env: dict) -> str:
    done = subprocess.run(
        [PYTHON, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout.strip()


def recreate_database(url: str) -> None:
    parsed = urlparse(url)
    name = parsed.path.lstrip("/")
    admin = parsed._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


# --- the dataset -------------------------------------------------------------------------------

WORKFLOW = {"main": [{"evaluate": {"doubled": "$ inputs['n'] * 2"}}, {"return": {"n": "$ _"}}]}


def seed() -> dict:
    """Workspaces, agents, a user and keys, through the services like the product makes them."""
    import django  # configured from the environment main() prepared

    django.setup()
    # Imported after setup: the settings come from the environment this script prepared.
    from executions import services
    from executions.models import Role

    out: dict = {"workspaces": {}}
    user = services.user_create(username="bench", password="bench-password-1")
    for slug in WORKSPACES:
        ws, _ = services.workspace_get_or_create(slug=slug)
        services.membership_set(workspace=ws, user=user, role=Role.ADMIN)
        _, key = services.apikey_create(workspace=ws, name="scale")
        agents = []
        for i in range(AGENTS_PER_WORKSPACE):
            agent = services.agent_create(
                workspace=ws, name=f"{slug}-agent-{i:02d}", type="workflow"
            )
            services.agent_version_create(agent=agent, config=WORKFLOW)
            agents.append(str(agent.pk))
        out["workspaces"][slug] = {"id": str(ws.pk), "key": key, "agents": agents}
    out["user_id"] = user.pk
    return out


def build(url: str, size: int, env: dict) -> dict:
    began = time.monotonic()
    manage("migrate", "-v0", env=env)
    seeded = seed()
    with psycopg.connect(url, autocommit=True) as conn:
        # A lean build: no commit waits, no foreign-key trigger per row (the rows are made
        # consistent by construction), and the secondary indexes built once after the load
        # instead of maintained row by row.
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET session_replication_role = replica")
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("SET work_mem = '64MB'")
        deferred = drop_secondary_indexes(conn)
        for label, sql in (
            ("executions", EXECUTIONS),
            ("transitions", TRANSITIONS),
            ("approvals", APPROVALS),
            ("rollups", ROLLUP),
            ("duration histograms", DURATIONS),
        ):
            started = time.monotonic()
            conn.execute(sql, {"size": size})
            log(f"built {label} in {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        for definition in deferred:
            conn.execute(definition)
        log(f"built {len(deferred)} indexes in {time.monotonic() - started:.1f}s")
        conn.execute("SET session_replication_role = origin")
        conn.execute("VACUUM ANALYZE")
        big = conn.execute(
            "SELECT id, workspace_id FROM executions_execution WHERE transition_count = 10000"
        ).fetchone()
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM executions_execution),"
            " (SELECT count(*) FROM executions_transition),"
            " (SELECT count(*) FROM approvals_approval WHERE status = 'pending')"
        ).fetchone()
    seeded["big"] = {"id": str(big[0]), "workspace_id": str(big[1])}
    seeded["counts"] = dict(
        zip(("executions", "transitions", "pending_approvals"), counts, strict=True)
    )
    seeded["build_seconds"] = round(time.monotonic() - began, 1)
    return seeded


BULK_TABLES = ("executions_execution", "executions_transition", "approvals_approval")
ROLLUP_TABLES = ("executions_executionrollup", "executions_durationrollup")


def rebuild_rollups(url: str, env: dict) -> None:
    """Migrate a dataset built earlier and rebuild its rollup tables from its executions, as the
    build makes them (for a new rollup column or table, without rebuilding the 10M rows)."""
    manage("migrate", "-v0", env=env)
    with psycopg.connect(url, autocommit=True) as conn:
        started = time.monotonic()
        conn.execute(f"TRUNCATE {', '.join(ROLLUP_TABLES)}")
        conn.execute(ROLLUP)
        conn.execute(DURATIONS)
        for table in ROLLUP_TABLES:  # autovacuum may be off: the planner needs the figures
            conn.execute(f"VACUUM ANALYZE {table}")
        log(f"rebuilt the rollups in {time.monotonic() - started:.1f}s")


def drop_secondary_indexes(conn: psycopg.Connection) -> list[str]:
    """Drop the indexes no constraint owns on the bulk tables; return their definitions."""
    rows = conn.execute(
        "SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)"
        " FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid"
        " WHERE i.indrelid::regclass::text = ANY(%s) AND c.oid IS NULL",
        (list(BULK_TABLES),),
    ).fetchall()
    for name, _ in rows:
        conn.execute(f"DROP INDEX {name}")
    return [definition for _, definition in rows]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the cases ---------------------------------------------------------------------------------


def cases(data: dict) -> list[tuple[str, str, str, float]]:
    """(name, face, path, target ms); face "api" sends the workspace's key, "page" the session."""
    ws = _measured(data)
    agent = ws["agents"][0]
    big = data["big"]["id"]
    sample = data["sample"]
    api, page = "/api/v1/executions", "/executions/"
    listing = [
        ("default", {}),
        ("status=completed", {"status": "completed"}),
        ("status=failed", {"status": "failed"}),
        ("status=running", {"status": "running"}),
        ("agent", {"agent_id": agent}),
        ("agent+status", {"agent_id": agent, "status": "failed"}),
        ("session", {"session_id": "session-42"}),
        ("metadata", {"metadata": "tenant=tenant-7"}),
        ("q=execution id", {"q": sample}),
        ("q=agent name", {"q": ws["slug"] + "-agent-03"}),
        ("q=trace prefix", {"q": sample.replace("-", "")[:12]}),
        ("last 24h", {"created_after": data["day_ago"]}),
        ("cost_above", {"cost_above": "0.09"}),
    ]
    out: list[tuple[str, str, str, float]] = []
    for name, params in listing:
        out.append((f"API list {name}", "api", f"{api}?{urlencode(params)}", LIST_TARGET_MS))
        out.append((f"dashboard list {name}", "page", f"{page}?{urlencode(params)}", 50.0))
    for field in ("cost", "duration_ms", "updated_at", "started_at", "completed_at"):
        for sign in ("-", ""):
            order = f"{sign}{field}"
            out.append((f"API list order {order}", "api", f"{api}?ordering={order}", 50.0))
            out.append((f"dashboard list order {order}", "page", f"{page}?ordering={order}", 50.0))
    out += [
        ("API list page=500", "api", f"{api}?page=500", 50.0),
        ("API list cursor page 2", "api", f"{api}?mode=cursor&cursor={data['cursor']}", 50.0),
        ("API get execution (10,000 transitions)", "api", f"{api}/{big}", DETAIL_TARGET_MS),
        ("API transitions of it, first page", "api", f"{api}/{big}/transitions", DETAIL_TARGET_MS),
        ("dashboard detail (10,000 transitions)", "page", f"{page}{big}/", DETAIL_TARGET_MS),
        ("API stats, all time", "api", "/api/v1/stats", 50.0),
        ("API stats, last 24h", "api", f"/api/v1/stats?created_after={data['day_ago']}", 50.0),
        ("API approvals, no filter", "api", "/api/v1/approvals", 50.0),
        ("API approvals, pending", "api", "/api/v1/approvals?status=pending", 50.0),
        ("API approval-inbox", "api", f"{api}/approval-inbox", 50.0),
        ("API agents", "api", "/api/v1/agents", 50.0),
        ("overview page", "page", "/", 50.0),
        ("approvals inbox page", "page", "/approvals/", 50.0),
        ("agents page", "page", "/agents/", 50.0),
    ]
    return out


def _measured(data: dict) -> dict:
    """The workspace that holds the execution with 10,000 transitions: every case reads it."""
    for slug, ws in data["workspaces"].items():
        if ws["id"] == data["big"]["workspace_id"]:
            return {**ws, "slug": slug}
    raise SystemExit("the dataset has no execution with 10,000 transitions")


def selected(name: str, only: str) -> bool:
    """--only "overview,agents page": the cases whose name contains one of the substrings."""
    return not only or any(part in name for part in only.split(","))


def measure(base: str, data: dict, rounds: int, only: str = "") -> list[dict]:
    ws = _measured(data)
    results = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for name, face, path, target in cases(data):
            if not selected(name, only):
                continue
            headers = {"X-API-Key": ws["key"]} if face == "api" else {}
            cookies = {"sessionid": data["session"]} if face == "page" else {}
            timings, status = [], 0
            for attempt in range(rounds + 1):
                started = time.perf_counter()
                response = client.get(path, headers=headers, cookies=cookies)
                elapsed = (time.perf_counter() - started) * 1000
                status = response.status_code
                if attempt:  # the first request warms caches and connections
                    timings.append(elapsed)
            timings.sort()
            p50 = statistics.median(timings)
            p95 = timings[min(len(timings) - 1, max(0, round(0.95 * len(timings)) - 1))]
            row = {
                "case": name,
                "status": status,
                "p50_ms": round(p50, 1),
                "p95_ms": round(p95, 1),
                "max_ms": round(timings[-1], 1),  # one slow request (a GC pause?) shows here
                "target_ms": target,
                "within": p95 < target and status == 200,
                "bytes": len(response.content),
            }
            results.append(row)
            print(json.dumps(row), flush=True)
    return results


def explain_slow(results: list[dict], data: dict) -> None:
    """Replay each case over target in this process, and print the plan of its slowest query."""
    # Imported here: Django is configured from the environment main() prepared.
    import django
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    django.setup()
    ws = _measured(data)
    paths = {name: (face, path) for name, face, path, _ in cases(data)}
    for row in results:
        if row["within"]:
            continue
        face, path = paths[row["case"]]
        client = Client(HTTP_X_API_KEY=ws["key"]) if face == "api" else Client()
        if face == "page":
            client.cookies["sessionid"] = data["session"]
        with CaptureQueriesContext(connection) as captured:
            client.get(path)
        if not captured.captured_queries:
            continue
        slowest = max(captured.captured_queries, key=lambda q: float(q["time"]))
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + slowest["sql"])
            plan = "\n".join(line for (line,) in cursor.fetchall())
        print(
            json.dumps(
                {
                    "case": row["case"],
                    "queries": len(captured.captured_queries),
                    "slowest_ms": round(float(slowest["time"]) * 1000, 1),
                    "sql": slowest["sql"][:2000],
                    "plan": plan,
                }
            ),
            flush=True,
        )


# --- the production layout --------------------------------------------------------------------


def spawn_server(port: int, env: dict) -> subprocess.Popen:
    proc = subprocess.Popen(
        [str(ROOT / ".venv" / "bin" / "uvicorn"), "config.asgi:application", "--host",
         "127.0.0.1", "--port", str(port), "--workers", "2", "--log-level", "warning",
         "--no-access-log"],
        cwd=ROOT,
        env=env,
    )  # fmt: skip
    deadline = time.monotonic() + 240  # a loaded 2-core machine takes a while to import
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.terminate()
    raise SystemExit("the server did not start")


def session_for(user_id: int, workspace_id: str) -> str:
    """A logged-in dashboard session for the bench user (as the login view would make), showing
    the workspace every case reads (as the workspace switch would leave it)."""
    import django  # configured from the environment main() prepared

    django.setup()
    # Imported after setup: the settings come from the environment this script prepared.
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    from executions.middleware import SESSION_KEY as WORKSPACE_KEY

    user = get_user_model().objects.get(pk=user_id)
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session[WORKSPACE_KEY] = str(workspace_id)
    session.create()
    return session.session_key


def details(url: str, data: dict) -> None:
    """Ids the cases need: a sample execution, a cursor to page 2, "24 hours ago"."""
    import base64

    ws = _measured(data)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT id FROM executions_execution WHERE workspace_id = %s"
            " ORDER BY id DESC LIMIT 1 OFFSET %s",
            (ws["id"], min(1000, data["counts"]["executions"] // 6)),
        ).fetchone()
        second = conn.execute(
            "SELECT id FROM executions_execution WHERE workspace_id = %s"
            " ORDER BY id DESC LIMIT 1 OFFSET 19",
            (ws["id"],),
        ).fetchone()
        day_ago = conn.execute("SELECT now() - interval '24 hours'").fetchone()[0]
    data["sample"] = str(rows[0])
    data["cursor"] = base64.urlsafe_b64encode(str(second[0]).encode()).decode().rstrip("=")
    data["day_ago"] = day_ago.isoformat()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="executions to build")
    parser.add_argument("--rounds", type=int, default=20, help="timed requests per case")
    parser.add_argument("--port", type=int, default=8300)
    parser.add_argument("--reuse", action="store_true", help="measure the dataset already built")
    parser.add_argument("--build-only", action="store_true", help="build, measure nothing")
    parser.add_argument(
        "--rebuild-rollups",
        action="store_true",
        help="with --reuse: migrate and rebuild the rollup tables from the executions first",
    )
    parser.add_argument("--only", default="", help="cases whose name contains one of these (a,b)")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        raise SystemExit("DATABASE_URL must name a scratch PostgreSQL database")
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        EMBEDDED_WORKER="false",
        DEBUG="false",
        DEMO_TRAFFIC_RATE="0",
        RATE_LIMIT="1000000/1 second",
    )
    os.environ.update(env)
    sys.path.insert(0, str(ROOT))
    state = Path(f"/tmp/steward-scale-{urlparse(url).path.lstrip('/')}.json")
    if args.reuse and state.exists():
        data = json.loads(state.read_text())
        if args.rebuild_rollups:
            rebuild_rollups(url, env)
    else:
        recreate_database(url)
        data = build(url, args.size, env)
        state.write_text(json.dumps(data))
    if args.build_only:
        print(json.dumps({"dataset": data["counts"], "build_seconds": data.get("build_seconds")}))
        return
    details(url, data)
    data["session"] = session_for(data["user_id"], data["big"]["workspace_id"])
    print(json.dumps({"dataset": data["counts"], "build_seconds": data.get("build_seconds")}))
    server = spawn_server(args.port, env)
    try:
        results = measure(f"http://127.0.0.1:{args.port}", data, args.rounds, args.only)
    finally:
        server.terminate()
        server.wait(timeout=30)
    explain_slow(results, data)
    within = sum(row["within"] for row in results)
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps({"cases": len(results), "within_target": within, "loadavg": load}))


if __name__ == "__main__":
    main()
