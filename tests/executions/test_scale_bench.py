"""bench/scale.py at a tiny size, so the script cannot rot (CI never builds the 1M dataset)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
DATABASE_URL = os.environ.get("DATABASE_URL", "")

pytestmark = pytest.mark.skipif(
    not DATABASE_URL.startswith("postgres"), reason="the scale bench builds its data in PostgreSQL"
)


def test_the_scale_bench_builds_a_dataset_and_measures_every_case():
    scratch = urlparse(DATABASE_URL)
    url = scratch._replace(path=scratch.path.rstrip("/") + "_scale_ci").geturl()
    done = subprocess.run(
        [sys.executable, "bench/scale.py", "--size", "300", "--rounds", "1", "--port", "8399"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    dataset = lines[0]["dataset"]
    assert dataset["executions"] == 300
    assert dataset["transitions"] >= 10_000  # the one execution with 10,000 transitions
    measured = [line for line in lines if "p95_ms" in line]
    assert len(measured) == lines[-1]["cases"] > 50
    assert all(line["status"] == 200 for line in measured), [
        line["case"] for line in measured if line["status"] != 200
    ]
