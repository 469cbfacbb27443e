"""What a round trip costs when the process at the other end has been idle: prints one JSON line.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/steward_engine_bench \\
    REDIS_URL=redis://127.0.0.1:6379/1 .venv/bin/python bench/wakeups.py [--gap 0.05]

An idle run's path (bench/engine.py's idle latency) is a chain of processes each woken from
idle: PostgreSQL backends, Redis, the worker, the watching client. This measures, after `--gap`
seconds of idleness (the engine bench's gap between samples) and back to back, the median of: a
`SELECT 1` (a round trip to a PostgreSQL backend), a flushed one-row INSERT (a round trip and a
WAL flush), a Redis `LPUSH`, and the first and the next round trips of a burst after the gap. It
writes only to a table of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import redis


def _median_ms(samples: list[float]) -> float:
    return round(statistics.median(samples) * 1000, 3)


def _timed(call: Callable[[], object]) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gap", type=float, default=0.05, help="idle seconds before each sample")
    parser.add_argument("--samples", type=int, default=60)
    args = parser.parse_args()
    conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True)
    # A logged table (a temporary one writes no WAL: its INSERT would not wait for a flush).
    conn.execute("CREATE TABLE IF NOT EXISTS bench_wakeups (id bigserial PRIMARY KEY, v jsonb)")
    cache = redis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/1"))
    key = "steward:bench:wakeups"

    def select() -> object:
        return conn.execute("SELECT 1", prepare=True)

    def insert() -> object:
        return conn.execute("INSERT INTO bench_wakeups (v) VALUES (%s)", ['{"a": 1}'], prepare=True)

    def push() -> object:
        return cache.lpush(key, b"1")

    figures: dict[str, object] = {"bench": "wakeups", "gap_s": args.gap}
    for name, call in (("select", select), ("flushed_insert", insert), ("redis_lpush", push)):
        for gap, label in ((args.gap, "after_gap"), (0.0, "back_to_back")):
            samples = []
            for _ in range(args.samples):
                if gap:
                    time.sleep(gap)
                samples.append(_timed(call))
            figures[f"{name}_ms_{label}"] = _median_ms(samples)
    # A burst after the gap: which of its round trips pays for the wake-up.
    burst: list[list[float]] = []
    for _ in range(args.samples):
        time.sleep(args.gap)
        burst.append([_timed(select), _timed(select), _timed(push), _timed(select)])
    for i, name in enumerate(("first_select", "second_select", "first_lpush", "third_select")):
        figures[f"burst_{name}_ms"] = _median_ms([row[i] for row in burst])
    cache.delete(key)
    conn.execute("DROP TABLE bench_wakeups")
    figures["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
