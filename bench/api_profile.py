"""`bench/api.py --profile`: one API operation end to end, in process (Django's test client,
the real middleware, the PostgreSQL of bench/api.py's environment), with cProfile."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def profile(args: argparse.Namespace, env: dict[str, str]) -> None:
    """One request end to end, in process (Django's test client, the real middleware, the
    PostgreSQL of steward_env): ms per request and the functions the time goes to (cProfile)."""
    import cProfile
    import pstats

    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.test import Client

    from executions import services

    workspace, _ = services.workspace_get_or_create(slug="bench-profile")
    _, key = services.apikey_create(workspace=workspace, name="profile")
    agent = services.agent_create(
        workspace=workspace, name=f"profile-{time.time_ns()}", type="external"
    )
    client = Client(HTTP_X_API_KEY=key, HTTP_HOST="127.0.0.1")
    body = json.dumps({"input": {"n": 1}, "metadata": {"bench": "api"}})
    created = client.post(
        f"/api/v1/agents/{agent.pk}/execute", body, content_type="application/json"
    )
    execution_id = created.json()["data"]["id"]

    def one() -> None:
        if args.profile == "create-execution":
            r = client.post(
                f"/api/v1/agents/{agent.pk}/execute", body, content_type="application/json"
            )
        else:
            r = client.get(f"/api/v1/executions/{execution_id}")
        assert r.status_code < 300, r.content

    for _ in range(50):
        one()
    n = args.profile_requests
    started = time.perf_counter()
    cpu = time.process_time()
    for _ in range(n):
        one()
    wall = (time.perf_counter() - started) * 1000 / n
    cpu = (time.process_time() - cpu) * 1000 / n
    print(json.dumps({"profile": args.profile, "wall_ms": round(wall, 3), "cpu_ms": round(cpu, 3)}))
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        one()
    profiler.disable()
    stats = pstats.Stats(profiler).sort_stats("tottime")
    stats.print_stats(25)
    stats.sort_stats("cumulative").print_stats(40)
