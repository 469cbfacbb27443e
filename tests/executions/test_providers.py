"""The openai and anthropic providers against real local servers speaking their wire protocols
(SSE streaming, tool calls, usage, errors), over TCP: the anthropic SDK unpatched, and the
openai provider's own streamed client (providers/openai_http.py; the SDK only behind a proxy)."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.db import connections

from executions import services
from executions.engine import providers, runner
from executions.lifecycle import Actor
from executions.models import Execution

from .engine_helpers import drain, make_agent, start, steps
from .llm_servers import AnthropicServer, OpenAIServer


def no_stop() -> bool:
    return False


@pytest.fixture
def openai_server():
    server = OpenAIServer(
        [
            {
                "content": "Let me compute. ",
                "tool_calls": [
                    {"id": "call_a", "name": "calculator", "arguments": {"expression": "6*7"}}
                ],
            },
            {"content": "The answer is 42."},
        ]
    ).start()
    yield server
    server.stop()


@pytest.fixture
def anthropic_server():
    server = AnthropicServer(
        [
            {
                "thinking": "Use the calculator.",
                "content": "Computing. ",
                "tool_calls": [
                    {"id": "toolu_a", "name": "calculator", "arguments": {"expression": "6*7"}}
                ],
            },
            {"content": "It is 42."},
        ]
    ).start()
    yield server
    server.stop()


def test_openai_provider_streams_text_tool_calls_and_usage(openai_server):
    config = providers.resolve(
        {
            "provider": "openai",
            "name": "gpt-4o-mini",
            "base_url": openai_server.base_url,
            "api_key": "k",
        }
    )
    deltas = []
    result = providers.get("openai").complete(
        config,
        [{"role": "user", "content": "6*7?"}],
        [{"name": "calculator", "description": "calc", "parameters": {"type": "object"}}],
        on_delta=lambda kind, text: deltas.append((kind, text)),
        should_stop=no_stop,
    )
    assert result.content == "Let me compute. "
    assert result.tool_calls == [
        {"id": "call_a", "name": "calculator", "arguments": {"expression": "6*7"}}
    ]
    assert result.usage == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    assert [d for d in deltas if d[0] == "content"]
    sent = openai_server.requests[0]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["stream"] is True
    assert sent["body"]["tools"][0]["function"]["name"] == "calculator"
    assert {k.lower(): v for k, v in sent["headers"].items()}["authorization"] == "Bearer k"


def test_anthropic_provider_streams_thinking_text_tool_use_and_usage(anthropic_server):
    config = providers.resolve(
        {"provider": "anthropic", "name": "claude-haiku-4-5", "base_url": anthropic_server.base_url}
    )
    deltas = []
    result = providers.get("anthropic").complete(
        config,
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "6*7?"}],
        [{"name": "calculator", "parameters": {"type": "object"}}],
        on_delta=lambda kind, text: deltas.append((kind, text)),
        should_stop=no_stop,
    )
    assert result.thinking == "Use the calculator."
    assert result.content == "Computing. "
    assert result.tool_calls == [
        {"id": "toolu_a", "name": "calculator", "arguments": {"expression": "6*7"}}
    ]
    assert result.usage == {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}
    assert ("thinking", "Use the calculator.") in deltas
    body = anthropic_server.requests[0]["body"]
    assert anthropic_server.requests[0]["path"] == "/v1/messages"
    assert body["system"] == "Be brief."
    assert body["tools"][0]["input_schema"] == {"type": "object"}


def test_an_openai_agent_runs_its_tool_loop_with_usage_and_cost(workspace, openai_server):
    agent = make_agent(
        workspace,
        "gpt",
        "agent",
        {
            "model": {
                "provider": "openai",
                "name": "gpt-4o-mini",
                "base_url": openai_server.base_url,
            },
            "tools": ["calculator"],
        },
    )
    execution = drain(start(agent, {"question": "6*7?"}))
    assert execution.status == "completed", execution.error
    assert execution.output == {"response": "The answer is 42."}
    assert execution.token_usage == {
        "prompt_tokens": 22,
        "completion_tokens": 14,
        "total_tokens": 36,
    }
    assert execution.cost is not None and execution.cost > 0
    step_costs = [t.cost for t in execution.transitions.filter(step_kind="llm")]
    assert sum(step_costs, Decimal(0)) == execution.cost
    # The tool result went back to the server in OpenAI's shape.
    second = openai_server.requests[1]["body"]["messages"]
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == "call_a"
    assert '"result": 42' in second[-1]["content"]
    assert second[-2]["tool_calls"][0]["function"]["name"] == "calculator"


def test_an_anthropic_agent_runs_its_tool_loop(workspace, anthropic_server):
    agent = make_agent(
        workspace,
        "claude",
        "agent",
        {
            "model": {
                "provider": "anthropic",
                "name": "claude-haiku-4-5",
                "base_url": anthropic_server.base_url,
            },
            "system_prompt": "You are terse.",
            "tools": ["calculator"],
        },
    )
    execution = drain(start(agent, {"question": "6*7?"}))
    assert execution.status == "completed", execution.error
    assert execution.output == {"response": "It is 42."}
    assert execution.cost is not None and execution.cost > 0
    second = anthropic_server.requests[1]["body"]["messages"]
    assert second[-1]["role"] == "user"
    assert second[-1]["content"][0]["type"] == "tool_result"
    assert second[-1]["content"][0]["tool_use_id"] == "toolu_a"
    assert second[-2]["content"][-1]["type"] == "tool_use"


def test_a_model_without_a_known_price_records_cost_as_unknown(workspace):
    with OpenAIServer([{"content": "hi"}], model="my-local-llama") as server:
        agent = make_agent(
            workspace,
            "local",
            "agent",
            {
                "model": {
                    "provider": "openai",
                    "name": "my-local-llama",
                    "base_url": server.base_url,
                }
            },
        )
        execution = drain(start(agent, {"question": "hi"}))
    assert execution.status == "completed"
    assert execution.token_usage["total_tokens"] == 18
    assert execution.cost is None


def test_transient_errors_are_retried_with_backoff_and_recorded(workspace):
    with OpenAIServer([{"status": 503}, {"status": 429}, {"content": "finally"}]) as server:
        agent = make_agent(
            workspace,
            "flaky",
            "agent",
            {"model": {"provider": "openai", "name": "gpt-4o-mini", "base_url": server.base_url}},
        )
        execution = drain(start(agent, {"question": "hi"}))
    assert execution.status == "completed", execution.error
    assert execution.output == {"response": "finally"}
    retries = list(execution.transitions.filter(type="retry").values_list("message", flat=True))
    assert len(retries) == 2
    assert "HTTP 503" in retries[0] and "HTTP 429" in retries[1]
    assert steps(execution) == ["agent.llm[0]"]


def test_a_permanent_provider_error_fails_with_a_readable_error(workspace):
    with AnthropicServer([{"status": 400, "message": "max_tokens: too large"}]) as server:
        agent = make_agent(
            workspace,
            "broken",
            "agent",
            {
                "model": {
                    "provider": "anthropic",
                    "name": "claude-haiku-4-5",
                    "base_url": server.base_url,
                }
            },
        )
        execution = drain(start(agent, {"question": "hi"}))
    assert execution.status == "failed"
    assert "anthropic: HTTP 400: max_tokens: too large" in execution.error
    assert len(server.requests) == 1  # not retried


@pytest.mark.django_db(transaction=True)
def test_cancel_closes_the_provider_call_in_flight(workspace, owner):
    with OpenAIServer([{"hang": True}]) as server:
        agent = make_agent(
            workspace,
            "stuck",
            "agent",
            {"model": {"provider": "openai", "name": "gpt-4o-mini", "base_url": server.base_url}},
        )
        execution = start(agent, {"question": "hi"})

        def run() -> None:
            runner.run(execution.pk)
            connections.close_all()

        # A daemon: if the cancel fails to end the call, the test fails instead of the
        # process never exiting behind a thread stuck on the hanging server.
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        assert server.request_started.wait(10)
        services.execution_cancel(
            execution=Execution.objects.get(pk=execution.pk), actor=Actor.for_user(owner.user)
        )
        thread.join(10)
        assert not thread.is_alive()
        deadline = time.monotonic() + 5
        while server.disconnects == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.disconnects == 1  # the stream was closed, not left hanging
    execution.refresh_from_db()
    assert execution.status == "cancelled"
    assert steps(execution) == []
