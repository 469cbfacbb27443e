"""The external-agent example in docs/approvals.md, run as written against a live server while a
reviewer decides from another client."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
import pytest

from approvals.models import Approval
from executions.models import Execution
from tests.approvals.conftest import wait_for

DOC = Path(__file__).resolve().parents[2] / "docs" / "approvals.md"


def documented_example() -> str:
    text = DOC.read_text()
    match = re.search(r"<!-- external-agent-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "docs/approvals.md lost its external-agent example"
    return match.group(1)


@pytest.fixture
def without_worker(settings):
    # External agents are run by their own program: the server needs no embedded worker.
    settings.EMBEDDED_WORKER = False


@pytest.mark.django_db(transaction=True)
def test_the_documented_external_agent_runs_and_sends_what_the_reviewer_edited(
    without_worker, asgi_server, owner, teammate
):
    code = documented_example()
    scope: dict = {"BASE_URL": asgi_server.url, "API_KEY": owner.key}
    errors: list[BaseException] = []

    def program() -> None:
        try:
            exec(compile(code, str(DOC), "exec"), scope)  # noqa: S102 - our own documentation
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    thread = threading.Thread(target=program, daemon=True)
    thread.start()

    reviewer = httpx.Client(
        base_url=asgi_server.url, headers={"X-API-Key": teammate.key}, timeout=10
    )
    pending = wait_for(
        lambda: reviewer.get("/api/v1/approvals", params={"status": "pending"}).json()["data"],
        timeout=15,
    )
    assert pending, errors
    (approval,) = pending
    assert approval["title"] == "Send this e-mail to ada@example.com?"
    assert approval["source"] == "external"
    edited = {"subject": "Your refund", "body": "We refunded 120. Sorry for the wait!"}
    decided = reviewer.post(
        f"/api/v1/approvals/{approval['id']}/decide",
        json={"decision": "edit", "payload": edited, "reason": "warmer tone"},
    )
    assert decided.status_code == 200, decided.text

    thread.join(timeout=30)
    reviewer.close()
    if "steward" in scope:
        scope["steward"].close()  # keep-alive connections would hold up the server's shutdown
    assert not thread.is_alive(), "the example did not return after the decision"
    assert not errors, errors

    execution = Execution.objects.get(pk=scope["run"]["id"])
    assert execution.status == "completed"
    assert execution.output == {"sent": edited}
    assert execution.token_usage["total_tokens"] == 160
    assert float(execution.cost) == pytest.approx(0.0004)
    history = list(execution.transitions.order_by("seq").values_list("type", flat=True))
    assert history == [
        "init",
        "start",
        "step",
        "log",
        "wait",
        "decision",
        "approved",
        "finish",
    ]
    assert Approval.objects.get(pk=approval["id"]).expires_at is not None
