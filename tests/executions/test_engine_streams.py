"""SSE endpoints (`stream`, `status.stream`) and retention."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from django.utils import timezone
from promptrails._sse import _iter_sse_frames

from executions import services
from executions.engine import retention, runner
from executions.lifecycle import Actor
from executions.models import Execution, ExecutionEvent, ExecutionTombstone

from .engine_helpers import make_agent, start

pytestmark = pytest.mark.django_db(transaction=True)


def research_agent(workspace):
    return make_agent(
        workspace,
        "researcher",
        "agent",
        {
            "model": {
                "provider": "builtin",
                "script": [
                    {
                        "thinking": "Need maths.",
                        "tool_calls": [{"name": "calculator", "arguments": {"expression": "2*21"}}],
                    },
                    "The answer is 42.",
                ],
            },
            "tools": ["calculator"],
        },
    )


async def read_stream(key: str, path: str) -> tuple[str, str]:
    response = await AsyncClient().get(path, headers={"X-API-Key": key})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    body = b""
    async for chunk in response.streaming_content:
        body += chunk
    return response["Content-Type"], body.decode()


async def test_a_finished_execution_streams_its_events_then_done_and_closes(owner):
    agent = await sync_to_async(research_agent)(owner.workspace)
    execution = await sync_to_async(start)(agent, {"question": "6*7?"})
    await sync_to_async(runner.run)(execution.pk)
    _, body = await read_stream(owner.key, f"/api/v1/executions/{execution.pk}/stream")
    assert "\r" not in body
    # The PromptRails SDK's own parser reads every frame.
    events = list(_iter_sse_frames(iter([body])))
    kinds = [e.type for e in events]
    assert kinds[0] == "execution" and events[0].execution_id == str(execution.pk)
    assert kinds[-1] == "done"
    assert kinds.count("execution") == 1
    assert "thinking" in kinds and "tool_start" in kinds and "tool_end" in kinds
    assert "".join(e.content for e in events if e.type == "content") == "The answer is 42."
    tool_end = next(e for e in events if e.type == "tool_end")
    assert tool_end.name == "calculator" and "42" in tool_end.summary
    done = events[-1]
    assert done.output == {"response": "The answer is 42."}
    assert done.token_usage.total_tokens > 0


async def test_a_cancelled_execution_stream_ends_with_an_error_frame(owner):
    agent = await sync_to_async(research_agent)(owner.workspace)
    execution = await sync_to_async(start)(agent, {"question": "?"})
    await sync_to_async(services.execution_cancel)(
        execution=execution, actor=Actor.for_user(owner.user), reason="changed my mind"
    )
    _, body = await read_stream(owner.key, f"/api/v1/executions/{execution.pk}/stream")
    events = list(_iter_sse_frames(iter([body])))
    assert [e.type for e in events] == ["execution", "error"]
    assert events[-1].message == "execution cancelled"


async def test_status_stream_sends_julep_status_events_and_closes_on_a_terminal_status(owner):
    agent = await sync_to_async(research_agent)(owner.workspace)
    execution = await sync_to_async(start)(agent, {"question": "6*7?"})
    await sync_to_async(runner.run)(execution.pk)
    _, body = await read_stream(owner.key, f"/api/v1/executions/{execution.pk}/status.stream")
    frames = [f for f in body.split("\n\n") if f.strip()]
    data = json.loads(frames[-1].split("data: ", 1)[1])
    assert set(data) >= {
        "execution_id",
        "status",
        "updated_at",
        "error",
        "transition_count",
        "metadata",
    }
    assert data["execution_id"] == str(execution.pk)
    assert data["status"] == "completed"


async def test_another_workspace_cannot_stream_an_execution(owner, outsider):
    agent = await sync_to_async(research_agent)(owner.workspace)
    execution = await sync_to_async(start)(agent, {"question": "?"})
    response = await AsyncClient().get(
        f"/api/v1/executions/{execution.pk}/stream", headers={"X-API-Key": outsider.key}
    )
    assert response.status_code == 404


def test_retention_purges_old_finished_executions_and_leaves_a_tombstone(owner):
    agent = research_agent(owner.workspace)
    old = start(agent, {"question": "old"})
    runner.run(old.pk)
    fresh = start(agent, {"question": "new"})
    runner.run(fresh.pk)
    live = start(agent, {"question": "still pending"})
    Execution.objects.filter(pk__in=[old.pk, live.pk]).update(
        created_at=timezone.now() - timedelta(days=40)
    )
    counts = retention.purge()
    assert counts["executions"] == 1
    assert not Execution.objects.filter(pk=old.pk).exists()
    assert ExecutionTombstone.objects.filter(pk=old.pk).exists()
    assert Execution.objects.filter(pk__in=[fresh.pk, live.pk]).count() == 2
    response = owner.get(f"/api/v1/executions/{old.pk}")
    assert response.status_code == 404
    assert "expired" in response.json()["error"]
    assert not ExecutionEvent.objects.filter(execution_id=old.pk).exists()
