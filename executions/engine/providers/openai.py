"""Any OpenAI-compatible chat-completions server, through the `openai` SDK, streaming.

The SDK's own retries are off (`max_retries=0`): the engine retries transient errors itself so
each retry is recorded in the execution's history.
"""

from __future__ import annotations

import json
from typing import Any

from executions.engine.providers import (
    LLMResult,
    ModelConfig,
    OnDelta,
    ProviderError,
    ShouldStop,
    StreamStopped,
    error_message,
    openai_http,
    register_closer,
    shared_client,
    token_usage,
)


def to_wire_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    wire = []
    for message in messages:
        role = message.get("role")
        if role == "assistant" and message.get("tool_calls"):
            wire.append(
                {
                    "role": "assistant",
                    "content": message.get("content") or None,
                    "tool_calls": [
                        {
                            "id": call["id"],
                            "type": "function",
                            "function": {
                                "name": call["name"],
                                "arguments": json.dumps(call.get("arguments") or {}),
                            },
                        }
                        for call in message["tool_calls"]
                    ],
                }
            )
        elif role == "tool":
            content = message.get("content")
            wire.append(
                {
                    "role": "tool",
                    "tool_call_id": message.get("tool_call_id", ""),
                    "content": content if isinstance(content, str) else json.dumps(content),
                }
            )
        else:
            content = message.get("content")
            wire.append(
                {
                    "role": role,
                    "content": content if isinstance(content, (str, list)) else json.dumps(content),
                }
            )
    return wire


def to_wire_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function",
            "function": {
                "name": tool["name"],
                "description": tool.get("description", ""),
                "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
            },
        }
        for tool in tools
    ]


def parse_arguments(raw: str) -> Any:
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        # Shown to the model as a validation error by the tool runner, not a crash.
        return {"__unparsed__": raw}


class OpenAIProvider:
    def complete(
        self,
        config: ModelConfig,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        on_delta: OnDelta,
        should_stop: ShouldStop,
    ) -> LLMResult:
        body: dict[str, Any] = {
            **config.settings,
            "model": config.name,
            "messages": to_wire_messages(messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if tools:
            body["tools"] = to_wire_tools(tools)
        reply = _Reply(config.name, on_delta, should_stop)
        if openai_http.usable(config.base_url):
            chunks = openai_http.stream_chat(
                config.base_url,
                config.api_key,
                body,
                config.timeout,
                lambda closer: register_closer(should_stop, closer),
            )
            try:
                for chunk in chunks:
                    reply.add(chunk)
            finally:
                chunks.close()  # closes the HTTP response: a cancel ends the request
        else:
            _complete_with_sdk(config, body, reply, should_stop)
        return reply.result()


class _Reply:
    """A streamed reply put together from its chunks (dicts, as on the wire)."""

    def __init__(self, model: str, on_delta: OnDelta, should_stop: ShouldStop) -> None:
        self.model = model
        self.on_delta = on_delta
        self.should_stop = should_stop
        self.content: list[str] = []
        self.thinking: list[str] = []
        self.calls: dict[int, dict[str, Any]] = {}
        self.usage: dict[str, int] = {}
        self.finish = "stop"

    def add(self, chunk: dict[str, Any]) -> None:
        if self.should_stop():
            raise StreamStopped()
        self.model = chunk.get("model") or self.model
        usage = chunk.get("usage")
        if usage:
            self.usage = token_usage(
                usage.get("prompt_tokens"),
                usage.get("completion_tokens"),
                usage.get("total_tokens") or 0,
            )
        for choice in chunk.get("choices") or []:
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
            delta = choice.get("delta")
            if not delta:
                continue
            reasoning = delta.get("reasoning_content")
            if reasoning:
                self.thinking.append(reasoning)
                self.on_delta("thinking", reasoning)
            if delta.get("content"):
                self.content.append(delta["content"])
                self.on_delta("content", delta["content"])
            for call in delta.get("tool_calls") or []:
                index = call.get("index") or 0
                slot = self.calls.setdefault(index, {"id": "", "name": "", "raw": ""})
                if call.get("id"):
                    slot["id"] = call["id"]
                function = call.get("function")
                if function:
                    slot["name"] += function.get("name") or ""
                    slot["raw"] += function.get("arguments") or ""

    def result(self) -> LLMResult:
        tool_calls = [
            {
                "id": slot["id"] or f"call_{index}",
                "name": slot["name"],
                "arguments": parse_arguments(slot["raw"]),
            }
            for index, slot in sorted(self.calls.items())
        ]
        return LLMResult(
            content="".join(self.content),
            tool_calls=tool_calls,
            thinking="".join(self.thinking),
            finish_reason=self.finish,
            model=self.model,
            usage=self.usage,
        )


def _complete_with_sdk(
    config: ModelConfig, body: dict[str, Any], reply: _Reply, should_stop: ShouldStop
) -> None:
    """Through the `openai` SDK (a proxy from the environment: httpx honours it)."""
    import openai

    client = shared_client(openai.OpenAI, config)
    stream = None
    try:
        stream = client.chat.completions.create(**body)
        register_closer(should_stop, stream.close)
        for chunk in stream:
            reply.add(chunk.model_dump(exclude_none=True))
    except StreamStopped:
        raise
    except openai.APIStatusError as exc:
        status = exc.status_code
        raise ProviderError(
            f"openai: HTTP {status}: {error_message(exc)}",
            transient=status == 429 or status >= 500,
            status=status,
        ) from None
    except (openai.APITimeoutError, openai.APIConnectionError) as exc:
        raise ProviderError(f"openai: {type(exc).__name__}: {exc}", transient=True) from None
    finally:
        if stream is not None:
            stream.close()  # closes the HTTP response: a cancel ends the request
