"""The Julep 0.3.9 Python SDK of seed 004 (`julep.managers.task`), unmodified, against a live
Steward at /julep/v0, sync and async.

That SDK was never published in this form, and its pins clash with ours (beartype 0.18,
pydantic 2.7, httpx 0.27, openai 1.35, marshmallow 3), so it runs in a virtual environment of
its own, built once with uv from ../shared/vendor/julep-sdk-0.3.9 and its poetry.lock and
cached under ~/.cache/steward/, in a subprocess that talks HTTP to the server in this process
(tests/compat/julep_v0_driver.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from executions.models import Execution, Transition

pytestmark = pytest.mark.django_db(transaction=True)

HERE = Path(__file__).resolve().parent
VENDOR = Path(
    os.environ.get("STEWARD_JULEP_V0_SDK")
    or HERE.parents[2] / "shared" / "vendor" / "julep-sdk-0.3.9"
)
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "steward"
VENV = CACHE / "julep-0.3.9-venv"


def _fingerprint(sdk: Path) -> str:
    """Changes when the SDK or its lock file changes (then the environment is rebuilt)."""
    digest = hashlib.sha256()
    for file in sorted([sdk / "poetry.lock", sdk / "pyproject.toml", *sdk.rglob("*.py")]):
        digest.update(str(file.relative_to(sdk)).encode() + file.read_bytes())
    return digest.hexdigest()


def _uv() -> list[str] | None:
    for command in (["uv"], [sys._base_executable, "-m", "uv"]):  # the Makefile's two ways
        if (
            shutil.which(command[0])
            and subprocess.run([*command, "--version"], capture_output=True).returncode == 0
        ):
            return command
    return None


def _build(sdk: Path, venv: Path) -> None:
    """A fresh environment with the SDK, every dependency pinned by the SDK's own poetry.lock."""
    lock = tomllib.loads((sdk / "poetry.lock").read_text())
    building = venv.with_name(f"{venv.name}.building-{os.getpid()}")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    pins = building / "constraints.txt"
    pins.write_text("".join(f"{p['name']}=={p['version']}\n" for p in lock["package"]))
    python = building / "bin" / "python"
    uv = _uv()
    if uv:
        steps = [
            [
                *uv,
                "venv",
                "--quiet",
                "--allow-existing",
                "--python",
                sys._base_executable,
                building,
            ],
            [*uv, "pip", "install", "--quiet", "--python", python, sdk, "-c", pins],
        ]
    else:
        steps = [
            [sys._base_executable, "-m", "venv", building],
            [python, "-m", "pip", "install", "--quiet", str(sdk), "-c", pins],
        ]
    for step in steps:
        done = subprocess.run([str(part) for part in step], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.fail(f"building the Julep 0.3.9 SDK environment failed: {done.stderr[-2000:]}")
    shutil.rmtree(venv, ignore_errors=True)
    building.rename(venv)


@pytest.fixture(scope="session")
def sdk_python() -> Path:
    if not (VENDOR / "julep" / "managers" / "task.py").is_file():
        pytest.skip(
            f"the Julep 0.3.9 SDK is not at {VENDOR}: it is kept in ../shared/vendor beside "
            "the repository, not in it (set STEWARD_JULEP_V0_SDK to its directory)"
        )
    stamp = VENV / "steward-fingerprint"
    wanted = _fingerprint(VENDOR)
    if not (stamp.is_file() and stamp.read_text() == wanted):
        _build(VENDOR, VENV)
        stamp.write_text(wanted)
    return VENV / "bin" / "python"


def drive(python: Path, mode: str, phase: str, **args: Any) -> dict[str, Any]:
    done = subprocess.run(
        [str(python), str(HERE / "julep_v0_driver.py"), mode, phase, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture
def base_url(asgi_server) -> str:
    return f"{asgi_server.url}/julep/v0"


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_task_is_created_listed_fetched_and_run_to_succeeded(sdk_python, base_url, owner, mode):
    seen = drive(sdk_python, mode, "flow", key=owner.key, base_url=base_url)

    agent, task = seen["agent"], seen["task"]
    assert agent["__class__"] == "Agent" and agent["name"] == f"adder-{mode}"
    assert task["__class__"] == "Task" and task["name"] == "sum then double"
    assert task["description"] is None and task["tools_available"] == ["calculator"]

    [listed] = seen["listed"]
    got = seen["got"]
    for shown in (listed, got):
        assert shown["__class__"] == "Task"
        assert shown["id"] == task["id"] and shown["agent_id"] == agent["id"]
        assert shown["description"] is None and shown["tools_available"] == ["calculator"]
        assert shown["input_schema"]["required"] == ["a", "b"]
        # The SDK parsed each step into its own step classes: the tool step kept its 0.x shape.
        assert shown["main"][1] == {
            "tool_id": "calculator",
            "arguments": {"expression": "$ str(_['total']) + ' * 2'"},
        }
        assert shown["main"][0] == {"evaluate": {"total": "inputs['a'] + inputs['b']"}}

    started = seen["started"]
    assert started["__class__"] == "Execution" and started["status"] == "queued"
    assert started["task_id"] == task["id"] and started["arguments"] == {"a": 2, "b": 3}

    [final] = seen["final"]
    assert final["__class__"] == "Execution" and final["id"] == started["id"]
    assert final["status"] == "succeeded" and final["task_id"] == task["id"]
    assert final["arguments"] == {"a": 2, "b": 3}
    execution = Execution.objects.get(pk=started["id"])
    assert execution.output == {"doubled": 10}
    tool_step = Transition.objects.get(execution=execution, step_kind="tool")
    assert tool_step.output == {"expression": "5 * 2", "result": 10}


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_tool_that_needs_approval_parks_and_is_approved_in_the_native_api(
    sdk_python, base_url, owner, teammate, mode
):
    made = owner.post(
        "/api/v1/agents", {"name": f"careful-{mode}", "type": "agent", "description": "asks"}
    )
    agent_id = made.json()["data"]["id"]
    # An operator marks the agent's calculator as needing a reviewer; its tasks inherit that
    # when they name the tool in tools_available.
    policy = owner.post(
        f"/api/v1/agents/{agent_id}/versions",
        {"config": {"tools": [{"name": "calculator", "requires_approval": True}]}},
    )
    assert policy.status_code == 201, policy.json()

    seen = drive(sdk_python, mode, "gated", key=owner.key, base_url=base_url, agent_id=agent_id)
    [parked] = seen["parked"]
    assert parked["status"] == "awaiting_input" and parked["arguments"] == {"x": 21}

    approved = teammate.post(f"/api/v1/executions/{parked['id']}/approve", {"reason": "fine"})
    assert approved.status_code == 200, approved.json()

    [final] = drive(
        sdk_python,
        mode,
        "finish",
        key=owner.key,
        base_url=base_url,
        task_id=seen["task"]["id"],
        execution_id=parked["id"],
    )["final"]
    assert final["status"] == "succeeded"
    assert Execution.objects.get(pk=parked["id"]).output == {
        "expression": "21 * 2",
        "result": 42,
    }
