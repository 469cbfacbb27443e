"""Webhooks: a real local HTTP receiver gets signed deliveries; a failed delivery is retried
with backoff, every attempt is logged, and a dead endpoint does not hold up the engine."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from approvals import notifications
from approvals.models import WebhookDelivery
from executions import services as execution_services
from executions.lifecycle import Status
from executions.models import Execution
from tests.approvals.conftest import WorkerThread, approval_workflow, wait_for


class Receiver:
    """A real HTTP endpoint on 127.0.0.1 that records what it gets and answers with the next
    status in `statuses` (then 200)."""

    def __init__(self, statuses: list[int] | None = None, delay: float = 0.0) -> None:
        self.received: list[dict] = []
        self.statuses = list(statuses or [])
        self.delay = delay
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                time.sleep(receiver.delay)
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.received.append(
                    {"headers": dict(self.headers), "body": body, "status": status}
                )
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"boom")

            def log_message(self, *args) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def events(self) -> list[str]:
        return [json.loads(r["body"])["event"] for r in self.received if r["status"] == 200]


def verify(secret: str, headers: dict, body: bytes) -> bool:
    """What a receiver does, written out independently of Steward's own helper."""
    parts = dict(p.split("=", 1) for p in headers["Steward-Signature"].split(","))
    expected = hmac.new(
        secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    fresh = abs(time.time() - int(parts["t"])) < 300
    return fresh and hmac.compare_digest(expected, parts["v1"])


@pytest.fixture
def fast_retries(settings):
    settings.WEBHOOK_RETRY_BASE_SECONDS = 0.2
    settings.WEBHOOK_TIMEOUT_SECONDS = 2.0


@pytest.mark.django_db(transaction=True)
def test_signed_deliveries_reach_a_real_receiver_and_a_failure_is_retried(
    owner, teammate, fast_retries
):
    agent = approval_workflow(owner.workspace)
    with Receiver(statuses=[500]) as receiver:
        created = owner.post(
            "/api/v1/webhooks",
            {
                "url": receiver.url,
                "events": [
                    "execution.awaiting_approval",
                    "approval.decided",
                    "execution.completed",
                ],
            },
        )
        assert created.status_code == 201
        hook = created.json()["data"]
        secret = hook["secret"]
        assert secret.startswith("whsec_")

        execution, _ = execution_services.execution_start(
            workspace=owner.workspace, agent=agent, input={"amount": 5}
        )
        with WorkerThread(concurrency=1):
            assert wait_for(lambda: "execution.awaiting_approval" in receiver.events())
        approval_id = json.loads(receiver.received[-1]["body"])["data"]["approvals"][0]["id"]
        decided = teammate.post(f"/api/v1/approvals/{approval_id}/decide", {"decision": "approve"})
        assert decided.status_code == 200
        with WorkerThread(concurrency=1):
            assert wait_for(lambda: len(receiver.events()) == 3)

    # The first attempt got a 500 and was retried; then every delivery arrived once.
    assert receiver.received[0]["status"] == 500
    first, retry = receiver.received[0], receiver.received[1]
    assert first["headers"]["Steward-Delivery"] == retry["headers"]["Steward-Delivery"]
    assert retry["headers"]["Steward-Attempt"] == "2"
    assert receiver.events() == [
        "execution.awaiting_approval",
        "approval.decided",
        "execution.completed",
    ]
    for request in receiver.received:
        assert verify(secret, request["headers"], request["body"])
        assert not verify("whsec_wrong", request["headers"], request["body"])
        assert notifications.verify_signature(
            secret, request["headers"]["Steward-Signature"], request["body"]
        )
    completed = json.loads(receiver.received[-1]["body"])
    assert completed["data"]["execution"]["id"] == str(execution.pk)
    assert completed["data"]["execution"]["status"] == "completed"

    log = owner.get(f"/api/v1/webhooks/{hook['id']}/deliveries").json()["data"]
    awaiting = next(d for d in log if d["event"] == "execution.awaiting_approval")
    assert awaiting["status"] == "delivered"
    assert [a["status_code"] for a in awaiting["log"]] == [500, 200]


@pytest.mark.django_db(transaction=True)
def test_a_dead_endpoint_never_slows_the_engine(owner, settings, fast_retries):
    settings.WEBHOOK_MAX_ATTEMPTS = 2
    agent = approval_workflow(owner.workspace, name="quick", timeout_seconds=None)
    # Nothing listens on this port: every attempt fails to connect.
    notifications.webhook_create(
        workspace=owner.workspace, url="http://127.0.0.1:9/dead", events=["*"]
    )
    execution, _ = execution_services.execution_start(
        workspace=owner.workspace, agent=agent, input={}
    )
    with WorkerThread(concurrency=1):
        started = time.monotonic()
        assert wait_for(
            lambda: Execution.objects.get(pk=execution.pk).status == Status.AWAITING_APPROVAL
        )
        assert time.monotonic() - started < 3
        assert wait_for(
            lambda: (
                WebhookDelivery.objects.filter(status="failed").count()
                == WebhookDelivery.objects.count()
                > 0
            ),
            timeout=10,
        )
    delivery = WebhookDelivery.objects.first()
    assert delivery.attempts == 2
    assert delivery.log.count() == 2
    assert "ConnectError" in delivery.last_error


def test_webhooks_are_managed_by_admins_of_their_workspace(owner, teammate, outsider):
    refused = teammate.post("/api/v1/webhooks", {"url": "http://127.0.0.1:1/x"})
    assert refused.status_code == 403
    bad = owner.post("/api/v1/webhooks", {"url": "ftp://x", "events": ["execution.exploded"]})
    assert bad.status_code == 422
    assert {d["field"] for d in bad.json()["details"]} == {"url", "events"}

    hook = owner.post(
        "/api/v1/webhooks", {"url": "http://127.0.0.1:1/x", "events": ["approval.*"]}
    ).json()["data"]
    listed = owner.get("/api/v1/webhooks").json()
    assert [h["id"] for h in listed["data"]] == [hook["id"]]
    assert "secret" not in listed["data"][0]
    assert "approval.decided" in listed["meta"]["events"]
    assert outsider.get(f"/api/v1/webhooks/{hook['id']}").status_code == 404
    paused = owner.patch(f"/api/v1/webhooks/{hook['id']}", {"active": False})
    assert paused.json()["data"]["active"] is False
    assert owner.delete(f"/api/v1/webhooks/{hook['id']}").status_code == 204
    assert owner.get(f"/api/v1/webhooks/{hook['id']}").status_code == 404


def test_event_families_and_wildcards_match(owner):
    hook = notifications.webhook_create(
        workspace=owner.workspace, url="http://127.0.0.1:1/x", events=["approval.*"]
    )
    assert notifications.wants(hook, "approval.expired")
    assert not notifications.wants(hook, "execution.completed")
    hook.events = ["*"]
    assert notifications.wants(hook, "execution.completed")
