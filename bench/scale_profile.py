"""Every case of bench/scale.py replayed in this process, for figures that survive a loaded
machine: per request, the CPU the Python side spent (process time) and the time its SQL took
(the sum over its queries), the number of queries, and the slowest one. Wall-clock p95 from
bench/scale.py is what a client sees; on a shared 2-core machine it is mostly other people's
CPU, while these two add up to what one request costs.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/steward_scale \\
    REDIS_URL=redis://127.0.0.1:6379/3 .venv/bin/python bench/scale_profile.py --rounds 10

Reads the dataset bench/scale.py built (its state file); builds nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import ROOT, _measured, cases, details, selected, session_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="requests per case")
    parser.add_argument("--only", default="", help="cases whose name contains one of these (a,b)")
    args = parser.parse_args()
    url = os.environ.get("DATABASE_URL", "")
    state = Path(f"/tmp/steward-scale-{urlparse(url).path.lstrip('/')}.json")
    if not url.startswith("postgres") or not state.exists():
        raise SystemExit("build the dataset first: bench/scale.py (DATABASE_URL, same database)")
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        EMBEDDED_WORKER="false",
        DEBUG="false",
        DEMO_TRAFFIC_RATE="0",
        RATE_LIMIT="1000000/1 second",
    )
    sys.path.insert(0, str(ROOT))
    data = json.loads(state.read_text())
    details(url, data)
    data["session"] = session_for(data["user_id"], data["big"]["workspace_id"])
    # Imported after setup (session_for configured Django from this environment).
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    ws = _measured(data)
    api = Client(HTTP_X_API_KEY=ws["key"])
    page = Client()
    page.cookies["sessionid"] = data["session"]
    load = [Path("/proc/loadavg").read_text().split()[0]]
    for name, face, path, target in cases(data):
        if not selected(name, args.only):
            continue
        client = api if face == "api" else page
        client.get(path)  # warm: caches, connections, templates
        cpu, db, queries, slowest = [], [], 0, ("", 0.0)
        for _ in range(args.rounds):
            with CaptureQueriesContext(connection) as captured:
                began = time.process_time()
                response = client.get(path)
                spent = (time.process_time() - began) * 1000
            times = [(q["sql"], float(q["time"]) * 1000) for q in captured.captured_queries]
            cpu.append(spent)
            db.append(sum(t for _, t in times))
            queries = len(times)
            slowest = max([slowest, *times], key=lambda item: item[1])
        row = {
            "case": name,
            "status": response.status_code,
            "cpu_ms": round(statistics.median(cpu), 1),
            "db_ms": round(statistics.median(db), 1),
            "queries": queries,
            "slowest_query_ms": round(slowest[1], 1),
            "slowest_query": slowest[0][:160],
            "target_ms": target,
            "within": statistics.median(cpu) + statistics.median(db) < target,
        }
        print(json.dumps(row), flush=True)
    load.append(Path("/proc/loadavg").read_text().split()[0])
    print(json.dumps({"loadavg_before_after": load}))


if __name__ == "__main__":
    main()
