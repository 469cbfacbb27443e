"""Prefect 3's server API, measured by bench/api.py --peers the same way as Steward (same wrk
scripts, its own PostgreSQL database). It runs from its own virtualenv (bench/out/peers-venv,
created on first use): Prefect 3 pins websockets below 17, which would downgrade the runtime's
own, so it cannot share the project's lock."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
from api_wrk import measure_op, wait_up

OUT = Path(__file__).resolve().parent / "out"
PEERS_VENV = OUT / "peers-venv"
PREFECT_SPEC = "prefect>=3.9,<4"


def peers_python() -> Path:
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        uv = shutil.which("uv") or "uv"
        subprocess.run([uv, "venv", "-q", str(PEERS_VENV), "--python", "3.12"], check=True)
        subprocess.run(
            [uv, "pip", "install", "-q", "--python", str(python), PREFECT_SPEC], check=True
        )
    return python


def run_prefect(args: argparse.Namespace) -> None:
    python = peers_python()
    database = "prefect_api_bench"
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", database])
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", database], check=True)
    home = OUT / "prefect-home"
    home.mkdir(parents=True, exist_ok=True)
    port = args.port + 10  # past the Steward servers of an A/B
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": (
            f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}"
        ),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_LOGGING_SERVER_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [
            str(python),
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-ui",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_up(f"{base}/api/health", proc, seconds=120)
        with httpx.Client(base_url=base, timeout=30) as client:
            flow = client.post("/api/flows/", json={"name": "bench"}).json()
            ids = []
            for i in range(args.seed):
                r = client.post(
                    "/api/flow_runs/", json={"flow_id": flow["id"], "parameters": {"i": i}}
                )
                r.raise_for_status()
                ids.append(r.json()["id"])
        headers = {"Content-Type": "application/json"}
        create = '{"flow_id": "' + flow["id"] + '", "parameters": {"n": {n}}}'
        ops = {
            "create-execution": ("POST", "/api/flow_runs/", headers, create),
            "get-execution": ("GET", "/api/flow_runs/{id}", headers, ""),
        }
        for name, op in ops.items():
            if name in args.ops:
                measure_op(
                    name,
                    base,
                    op,
                    ids,
                    args=args,
                    server_pid=proc.pid,
                    database=database,
                    target="prefect 3 server",
                )
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
