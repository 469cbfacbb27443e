"""Any OpenAI-compatible chat-completions server, through the `openai` SDK, streaming.

The SDK's own retries are off (`max_retries=0`): the engine retries transient errors itself so
each retry is recorded in the execution's history.
"""

from __future__ import annotations

import json
from typing import Any

import openai

from executions.engine.providers import (
    LLMResult,
    ModelConfig,
    OnDelta,
    ProviderError,
    ShouldStop,
    StreamStopped,
    error_message,
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
        client = shared_client(openai.OpenAI, config)
        kwargs: dict[str, Any] = dict(config.settings)
        if tools:
            kwargs["tools"] = to_wire_tools(tools)
        content: list[str] = []
        thinking: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        usage: dict[str, int] = {}
        finish = "stop"
        model = config.name
        stream = None
        try:
            stream = client.chat.completions.create(
                model=config.name,
                messages=to_wire_messages(messages),
                stream=True,
                stream_options={"include_usage": True},
                **kwargs,
            )
            register_closer(should_stop, stream.close)
            for chunk in stream:
                if should_stop():
                    raise StreamStopped()
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = token_usage(
                        chunk.usage.prompt_tokens,
                        chunk.usage.completion_tokens,
                        chunk.usage.total_tokens or 0,
                    )
                for choice in chunk.choices or []:
                    delta = choice.delta
                    if choice.finish_reason:
                        finish = choice.finish_reason
                    if delta is None:
                        continue
                    reasoning = getattr(delta, "reasoning_content", None)
                    if reasoning:
                        thinking.append(reasoning)
                        on_delta("thinking", reasoning)
                    if delta.content:
                        content.append(delta.content)
                        on_delta("content", delta.content)
                    for call in delta.tool_calls or []:
                        slot = calls.setdefault(call.index, {"id": "", "name": "", "raw": ""})
                        if call.id:
                            slot["id"] = call.id
                        if call.function is not None:
                            slot["name"] += call.function.name or ""
                            slot["raw"] += call.function.arguments or ""
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
        tool_calls = [
            {
                "id": slot["id"] or f"call_{index}",
                "name": slot["name"],
                "arguments": parse_arguments(slot["raw"]),
            }
            for index, slot in sorted(calls.items())
        ]
        return LLMResult(
            content="".join(content),
            tool_calls=tool_calls,
            thinking="".join(thinking),
            finish_reason=finish,
            model=model,
            usage=usage,
        )
