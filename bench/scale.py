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


# One row per execution, all of it computed from the row number `i` so a rerun is identical.
EXECUTIONS = """
WITH params AS (
  SELECT %(size)s::bigint AS n, extract(epoch FROM now()) * 1000 AS now_ms,
         60 * 86400 * 1000.0 AS span_ms
), rows AS (
  SELECT i, abs(hashtext(i::text)) AS h,
         (p.now_ms - p.span_ms + p.span_ms * i / p.n)::bigint AS ms
  FROM params p, generate_series(1, (SELECT n FROM params)) AS i
), agents AS (
  SELECT array_agg(id ORDER BY id) AS ids, array_agg(workspace_id ORDER BY id) AS ws,
         array_agg(current_version_id ORDER BY id) AS vs, count(*) AS n
  FROM executions_agent
), shaped AS (
  SELECT i, h, ms, 1 + h %% (SELECT n FROM agents) AS a,
    CASE WHEN i = 1 THEN 'completed'
         WHEN h %% 1000 < 2 THEN 'awaiting_approval'
         WHEN h %% 1000 < 4 THEN 'running'
         WHEN h %% 1000 < 5 THEN 'pending'
         WHEN h %% 1000 < 85 THEN 'failed'
         WHEN h %% 1000 < 115 THEN 'cancelled'
         WHEN h %% 1000 < 135 THEN 'rejected'
         ELSE 'completed' END AS status
  FROM rows
)
INSERT INTO executions_execution (
  id, workspace_id, agent_id, agent_version_id, parent_id, retry_of_id, session_id, status,
  input, output, error, metadata, token_usage, cost, duration_ms, trace_id, transition_count,
  created_at, started_at, completed_at, updated_at, idempotency_key, request_hash,
  created_by_user_id, created_by_key_id, state, lease_owner, lease_expires_at, runnable_at,
  cancel_requested_at)
SELECT u.id, ag.ws[s.a], ag.ids[s.a], ag.vs[s.a], NULL, NULL,
  'session-' || (s.h %% 50000), s.status,
  jsonb_build_object('order_id', 'A-' || s.i, 'amount', s.h %% 500),
  CASE WHEN s.status = 'completed' THEN jsonb_build_object('ok', true) END,
  CASE WHEN s.status = 'failed' THEN 'tool refused' ELSE '' END,
  jsonb_build_object('tenant', 'tenant-' || (s.h %% 200), 'region',
                     (ARRAY['eu','us','apac'])[1 + s.h %% 3], 'priority', s.h %% 5),
  jsonb_build_object('prompt_tokens', s.h %% 900, 'completion_tokens', s.h %% 300,
                     'total_tokens', s.h %% 900 + s.h %% 300),
  CASE WHEN s.h %% 10 = 0 THEN NULL ELSE (s.h %% 10000) / 100000.0 END,
  CASE WHEN s.status IN ('completed','failed','cancelled','rejected')
       THEN 200 + s.h %% 30000 END,
  replace(u.id::text, '-', ''),
  CASE WHEN s.i = 1 THEN 10000 ELSE 10 END,
  to_timestamp(s.ms / 1000.0), to_timestamp(s.ms / 1000.0 + 0.05),
  CASE WHEN s.status IN ('completed','failed','cancelled','rejected')
       THEN to_timestamp(s.ms / 1000.0 + (200 + s.h %% 30000) / 1000.0) END,
  to_timestamp(s.ms / 1000.0 + (200 + s.h %% 30000) / 1000.0),
  NULL, '', NULL, NULL, '{}'::jsonb, '', NULL,
  CASE WHEN s.status IN ('pending','running') THEN now() END, NULL
FROM shaped s CROSS JOIN agents ag
CROSS JOIN LATERAL (
  SELECT (lpad(to_hex(s.ms), 12, '0') || '7' || substr(md5(s.i::text), 1, 3) || '8'
          || substr(md5(s.i::text || 'v7'), 1, 15))::uuid AS id
) u
"""

TRANSITIONS = """
INSERT INTO executions_transition (
  execution_id, seq, type, from_status, to_status, step_path, step_kind, input, output, usage,
  cost, message, started_at, ended_at, actor_type, actor_user_id, actor_key_id, actor_label,
  created_at)
SELECT e.id, g.seq,
  CASE WHEN g.seq = 1 THEN 'init' WHEN g.seq = e.transition_count THEN 'finish' ELSE 'step' END,
  '', '', 'main[' || g.seq || ']', 'evaluate', NULL,
  jsonb_build_object('n', g.seq), NULL, NULL, '', NULL, NULL, 'system', NULL, NULL, 'system',
  e.created_at + g.seq * interval '10 milliseconds'
FROM executions_execution e, generate_series(1, e.transition_count) AS g(seq)
"""

APPROVALS = """
INSERT INTO approvals_approval (
  id, workspace_id, execution_id, step_path, source, title, description, payload,
  payload_schema, allowed_actions, options, multiple, response_schema, assignee_roles,
  forbid_self_approval, required_approvals, required_rejections, reject_ends, expires_at,
  on_timeout, escalate_at, escalate_to_users, escalate_to_roles, escalated_at, status,
  decided_at, decided_by_label, result_payload, response, chosen_options, notified_at,
  created_at, updated_at)
SELECT e.id, e.workspace_id, e.id, 'main[1]', 'step', 'Refund ' || (e.input->>'amount') || '?',
  'A refund above the limit', e.input, NULL, '["approve","reject"]'::jsonb, NULL, false, NULL,
  '["reviewer"]'::jsonb, false, 1, 1, true, e.created_at + interval '30 days', 'reject', NULL,
  '[]'::jsonb, '[]'::jsonb, NULL, 'pending', NULL, '', NULL, NULL, NULL, NULL,
  e.created_at, e.created_at
FROM executions_execution e WHERE e.status = 'awaiting_approval'
"""

# As retention leaves them: hours for the last days, one row per day before (rollups.FOLD_AFTER).
ROLLUP = """
INSERT INTO executions_executionrollup
  (workspace_id, agent_id, status, hour, shard, count, costed, cost, duration_ms)
SELECT workspace_id, agent_id, status,
  CASE WHEN created_at < date_trunc('day', now() - interval '3 days')
       THEN date_trunc('day', created_at) ELSE date_trunc('hour', created_at) END, 0, count(*),
  count(*) FILTER (WHERE cost > 0), coalesce(sum(cost) FILTER (WHERE cost > 0), 0),
  coalesce(sum(duration_ms), 0)
FROM executions_execution WHERE status IN ('completed','failed','cancelled','rejected')
GROUP BY 1, 2, 3, 4
"""


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


def measure(base: str, data: dict, rounds: int) -> list[dict]:
    ws = _measured(data)
    results = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for name, face, path, target in cases(data):
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
        results = measure(f"http://127.0.0.1:{args.port}", data, args.rounds)
    finally:
        server.terminate()
        server.wait(timeout=30)
    explain_slow(results, data)
    within = sum(row["within"] for row in results)
    load = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps({"cases": len(results), "within_target": within, "loadavg": load}))


if __name__ == "__main__":
    main()
