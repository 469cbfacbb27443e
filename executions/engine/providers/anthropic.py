"""Anthropic's Messages API through the `anthropic` SDK, streaming raw events.

The SDK's own retries are off: the engine retries transient errors itself and records them.
"""

from __future__ import annotations

import json
from typing import Any

import anthropic

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
from executions.engine.providers.openai import parse_arguments


def to_wire(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, messages) in Anthropic's shape: tool results are user turns of
    `tool_result` blocks, tool calls are assistant `tool_use` blocks, and turns of the same role
    are merged because the API requires them to alternate."""
    system: list[str] = []
    wire: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if wire and wire[-1]["role"] == role:
            wire[-1]["content"].extend(blocks)
        else:
            wire.append({"role": role, "content": blocks})

    for message in messages:
        role = message.get("role")
        content = message.get("content")
        text = content if isinstance(content, str) else json.dumps(content) if content else ""
        if role == "system":
            system.append(text)
        elif role == "tool":
            add(
                "user",
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": message.get("tool_call_id", ""),
                        "content": text,
                    }
                ],
            )
        elif role == "assistant":
            blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
            for call in message.get("tool_calls") or []:
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call["id"],
                        "name": call["name"],
                        "input": call.get("arguments") or {},
                    }
                )
            add("assistant", blocks or [{"type": "text", "text": ""}])
        else:
            add("user", [{"type": "text", "text": text}])
    return "\n\n".join(system), wire


class AnthropicProvider:
    def complete(
        self,
        config: ModelConfig,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        on_delta: OnDelta,
        should_stop: ShouldStop,
    ) -> LLMResult:
        client = shared_client(anthropic.Anthropic, config)
        system, wire = to_wire(messages)
        kwargs: dict[str, Any] = {k: v for k, v in config.settings.items() if k != "max_tokens"}
        if "stop" in kwargs:
            kwargs["stop_sequences"] = kwargs.pop("stop")
        kwargs.pop("seed", None)
        kwargs.pop("presence_penalty", None)
        kwargs.pop("frequency_penalty", None)
        if system:
            kwargs["system"] = system
        if tools:
            kwargs["tools"] = [
                {
                    "name": tool["name"],
                    "description": tool.get("description", ""),
                    "input_schema": tool.get("parameters") or {"type": "object", "properties": {}},
                }
                for tool in tools
            ]
        content: list[str] = []
        thinking: list[str] = []
        blocks: dict[int, dict[str, Any]] = {}
        usage = {"prompt_tokens": 0, "completion_tokens": 0}
        finish = "stop"
        model = config.name
        stream = None
        try:
            stream = client.messages.create(
                model=config.name,
                max_tokens=int(config.settings.get("max_tokens", 1024)),
                messages=wire,
                stream=True,
                **kwargs,
            )
            register_closer(should_stop, stream.close)
            for event in stream:
                if should_stop():
                    raise StreamStopped()
                kind = event.type
                if kind == "message_start":
                    model = event.message.model or model
                    usage["prompt_tokens"] = event.message.usage.input_tokens or 0
                    usage["completion_tokens"] = event.message.usage.output_tokens or 0
                elif kind == "content_block_start":
                    block = event.content_block
                    blocks[event.index] = {
                        "type": block.type,
                        "id": getattr(block, "id", ""),
                        "name": getattr(block, "name", ""),
                        "raw": "",
                    }
                elif kind == "content_block_delta":
                    delta = event.delta
                    if delta.type == "text_delta":
                        content.append(delta.text)
                        on_delta("content", delta.text)
                    elif delta.type == "thinking_delta":
                        thinking.append(delta.thinking)
                        on_delta("thinking", delta.thinking)
                    elif delta.type == "input_json_delta":
                        blocks.setdefault(event.index, {"type": "tool_use", "raw": ""})
                        blocks[event.index]["raw"] += delta.partial_json
                elif kind == "message_delta":
                    if event.usage is not None and event.usage.output_tokens is not None:
                        usage["completion_tokens"] = event.usage.output_tokens
                    if event.delta.stop_reason:
                        finish = event.delta.stop_reason
        except StreamStopped:
            raise
        except anthropic.APIStatusError as exc:
            status = exc.status_code
            raise ProviderError(
                f"anthropic: HTTP {status}: {error_message(exc)}",
                transient=status in (429, 529) or status >= 500,
                status=status,
            ) from None
        except (anthropic.APITimeoutError, anthropic.APIConnectionError) as exc:
            raise ProviderError(f"anthropic: {type(exc).__name__}: {exc}", transient=True) from None
        finally:
            if stream is not None:
                stream.close()
        tool_calls = [
            {
                "id": b.get("id") or f"toolu_{i}",
                "name": b["name"],
                "arguments": parse_arguments(b["raw"]),
            }
            for i, b in sorted(blocks.items())
            if b.get("type") == "tool_use"
        ]
        return LLMResult(
            content="".join(content),
            tool_calls=tool_calls,
            thinking="".join(thinking),
            finish_reason="tool_calls" if finish == "tool_use" else finish,
            model=model,
            usage=token_usage(usage["prompt_tokens"], usage["completion_tokens"]),
        )
