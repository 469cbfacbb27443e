"""A Redis outage, with a real Redis on LIVE's own port that the test stops and starts again:
one warning when it goes, one when it is back, no traceback per event, and the open page
catches up with what happened meanwhile without a reload."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time

import pytest
from playwright.sync_api import expect

from approvals import services as approval_services
from executions import services
from executions.lifecycle import Actor
from executions.live.follow import wait_settled_sync
from executions.models import Execution
from tests.browser.test_live_execution import page_contents

pytestmark = pytest.mark.browser

REDIS_PORT = 8501  # LIVE's port range (coord rules: 8500-8599)


class Redis:
    def __init__(self, port: int) -> None:
        self.port = port
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],  # fmt: skip
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@pytest.fixture
def redis(settings):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is missing")
    server = Redis(REDIS_PORT)
    server.start()
    # Set before the ASGI server starts: its sockets and publishers use this layer.
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "executions.live.layer.PubSubLayer",
            "CONFIG": {
                "hosts": [
                    {
                        "address": f"redis://127.0.0.1:{REDIS_PORT}/5",
                        "socket_timeout": 5,
                        "socket_connect_timeout": 1,
                    }
                ],
                "prefix": "steward-live-outage",
            },
        }
    }
    yield server
    server.stop()


def records(caplog, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


def test_an_outage_logs_once_each_way_and_the_page_catches_up_when_redis_returns(
    redis, open_page, demo, owner, teammate, caplog
):
    caplog.set_level(logging.INFO)
    execution, _ = services.execution_start(
        workspace=owner.workspace,
        agent=demo["refund-desk"],
        input={"order_id": "A-1003", "amount": 150},
    )
    execution = wait_settled_sync(execution.pk, timeout=60)
    assert execution.status == "awaiting_approval", execution.error
    page = open_page(owner, f"/executions/{execution.pk}/")
    expect(page.locator("#live-state")).to_have_attribute("data-state", "open")
    expect(page.locator("#exec-header .badge")).to_have_text("Awaiting approval")

    redis.stop()
    # The run goes on without Redis: approved, it finishes, and every one of its events is
    # published into the outage.
    approval = execution.approvals.get()
    approval_services.approval_decide(
        approval=approval, decision="approve", actor=Actor.for_user(teammate.user)
    )
    deadline = time.monotonic() + 60
    while Execution.objects.get(pk=execution.pk).status != "completed":
        assert time.monotonic() < deadline, "the run did not finish without Redis"
        time.sleep(0.05)
    time.sleep(1.5)  # the receive loop keeps failing meanwhile
    expect(page.locator("#exec-header .badge")).to_have_text("Awaiting approval")
    assert len(records(caplog, "live updates paused")) == 1

    redis.start()
    expect(page.locator("#exec-header .badge")).to_have_text("Completed", timeout=20_000)
    deadline = time.monotonic() + 10
    while not records(caplog, "live updates resumed"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    live = page_contents(page)
    page.reload()
    expect(page.locator("#exec-header .badge")).to_have_text("Completed")
    assert page_contents(page) == live

    assert len(records(caplog, "live updates paused")) == 1
    assert len(records(caplog, "live updates resumed")) == 1
    tracebacks = [
        r for r in caplog.records if r.exc_info and r.name.startswith(("steward", "channels"))
    ]
    assert tracebacks == []
