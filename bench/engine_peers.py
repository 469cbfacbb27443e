"""The peers of `bench/engine.py --peers`, written the way each project's documentation shows,
on the same 3-step workload (step1 `x = n*2`, step2 `y = x+1`, step3 returns {"result": y}).

- Celery 5: this module is the app (`celery -A bench.engine_peers worker --pool prefork
  --concurrency 2`), Redis as broker and result backend; one task computes the three steps and
  only its result is recorded (Celery has no per-step record).
- DBOS Transact 3: `python bench/engine_peers.py dbos …` launches DBOS on a PostgreSQL system
  database and runs a workflow of three `@DBOS.step`s (each step recorded, like Steward) from 8
  threads, then one after another for the idle latency; prints one JSON line.

Installed from the optional `bench` dependency group: `uv sync --group bench`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from celery import Celery

REDIS = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/1")
app = Celery("bench_engine_peers", broker=REDIS, backend=REDIS)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=4,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="bench.three_steps")
def three_steps(n: int) -> dict:
    x = n * 2
    y = x + 1
    return {"result": y}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_dbos(database_url: str, executions: int, samples: int, threads: int) -> dict:
    from dbos import DBOS, DBOSConfig

    config: DBOSConfig = {
        "name": "steward-bench",
        "system_database_url": database_url,
        "log_level": "WARNING",
    }
    DBOS(config=config)

    @DBOS.step()
    def step1(n: int) -> int:
        return n * 2

    @DBOS.step()
    def step2(x: int) -> int:
        return x + 1

    @DBOS.step()
    def step3(y: int) -> dict:
        return {"result": y}

    @DBOS.workflow()
    def three(n: int) -> dict:
        return step3(step2(step1(n)))

    DBOS.launch()
    three(-1)  # warm up: connections, prepared statements
    peak = rss_kb(os.getpid())
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(three, range(executions)))
    elapsed = time.monotonic() - began
    peak = max(peak, rss_kb(os.getpid()))
    assert results[-1] == {"result": (executions - 1) * 2 + 1}
    latencies = []
    for n in range(samples):
        t0 = time.monotonic()
        three(executions + n)
        latencies.append((time.monotonic() - t0) * 1000)
        time.sleep(0.05)  # engine.py's IDLE_GAP_SECONDS
    DBOS.destroy()
    latencies.sort()
    return {
        "executions": executions,
        "seconds": round(elapsed, 2),
        "executions_per_sec": round(executions / elapsed, 1),
        "idle_latency_ms_p50": round(latencies[len(latencies) // 2], 2),
        "peak_rss_mb": round(peak / 1024, 1),
    }


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "dbos":
    url, count, samples, threads = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    print(json.dumps(run_dbos(url, count, samples, threads)))
