"""A model call's record is held back to the run's next write (ENGINE-INFLIGHT, issue 10): a
one-prompt run writes its start and its end, not a third transaction for the step, and the
reply's content event is stored in the end's transaction, in order. The lean OpenAI-compatible
client (providers/openai_http.py) against a real local server: keep-alive reuse, errors."""

from __future__ import annotations

import pytest

from executions import lifecycle, lifecycle_batch
from executions.engine import providers, queue, runner
from executions.engine.providers import openai_http
from executions.models import Execution, ExecutionEvent, Transition

from .engine_helpers import drain, make_agent, start, steps
from .llm_servers import OpenAIServer


@pytest.mark.django_db(transaction=True)
def test_a_prompt_run_writes_its_start_and_its_end_only(workspace, monkeypatch):
    writes = []
    append_many, append_alone = lifecycle.append_many, lifecycle_batch.append_alone

    def counted(execution, entries, **kwargs):
        writes.append([e.get("type") for e in entries])
        return append_many(execution, entries, **kwargs)

    def counted_alone(pending, **kwargs):  # a write as one statement (PostgreSQL)
        writes.append([e.get("type") for e in pending.entries])
        return append_alone(pending, **kwargs)

    monkeypatch.setattr(lifecycle, "append_many", counted)
    monkeypatch.setattr(lifecycle_batch, "append_alone", counted_alone)
    with OpenAIServer([{"content": "Hello there."}]) as server:
        model = {"provider": "openai", "name": "gpt-4o-mini", "base_url": server.base_url}
        agent = make_agent(
            workspace, "one-prompt", "workflow", {"model": model, "main": [{"prompt": "hi"}]}
        )
        execution = drain(start(agent, {}))
    assert execution.status == "completed"
    assert writes == [["start"], ["step", "finish"]]
    assert steps(execution) == ["main[0]"]
    step = Transition.objects.get(execution=execution, type="step")
    assert step.step_kind == "prompt" and step.usage["total_tokens"] == 18
    types = list(
        ExecutionEvent.objects.filter(execution=execution)
        .order_by("id")
        .values_list("type", flat=True)
    )
    assert types == ["execution", "content", "done"]


def ask(server) -> providers.ProviderError:
    """One call through the openai provider to `server`; the error it raises."""
    config = providers.resolve({"provider": "openai", "name": "x", "base_url": server.base_url})
    with pytest.raises(providers.ProviderError) as caught:
        providers.get("openai").complete(
            config,
            [{"role": "user", "content": "hi"}],
            [],
            on_delta=lambda *a: None,
            should_stop=lambda: False,
        )
    return caught.value


def test_the_lean_client_errors_as_the_sdk_did_and_retries_only_transient_ones():
    with OpenAIServer([{"status": 400, "message": "bad model"}]) as server:
        caught = ask(server)
    assert str(caught) == "openai: HTTP 400: bad model"
    assert not caught.transient and caught.status == 400
    with OpenAIServer([{"status": 503}]) as server:
        caught = ask(server)
    assert caught.transient and caught.status == 503
    assert openai_http.usable(server.base_url)


class _StoppingWorker:
    """Just enough of a Worker: it starts shutting down the moment a model call has returned
    (its record held back), before the run's next step."""

    ctx = None

    @property
    def stopping(self) -> bool:
        return self.ctx is not None and self.ctx._held_effect

    def stop_reason(self, key: str) -> None:
        return None

    def watch_call(self, ctx, signal) -> int:
        self.ctx = ctx
        return 0

    def unwatch_call(self, key: int) -> None:
        pass


@pytest.mark.django_db(transaction=True)
def test_a_hand_back_right_after_a_model_call_writes_its_held_record(workspace):
    with OpenAIServer([{"content": "Only once."}]) as server:
        model = {"provider": "openai", "name": "gpt-4o-mini", "base_url": server.base_url}
        agent = make_agent(
            workspace,
            "prompt-then-more",
            "workflow",
            {"model": model, "main": [{"prompt": "hi"}, {"evaluate": {"x": "1 + 1"}}]},
        )
        execution = start(agent, {})
        assert queue.claim_one(execution.pk, owner="w1")
        claimed = Execution.objects.select_related("agent", "agent_version").get(pk=execution.pk)
        runner.run_claimed(claimed, owner="w1", worker=_StoppingWorker())
        execution.refresh_from_db()
        assert execution.status == "running" and execution.lease_owner == ""
        assert steps(execution) == ["main[0]"]  # written before the hand-back
        execution = drain(execution)
        assert execution.status == "completed"
        assert len(server.requests) == 1  # replayed on resume, not called again
