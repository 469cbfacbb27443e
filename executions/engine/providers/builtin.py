"""The built-in offline model: deterministic, free, and labelled "simulated" wherever it shows.

It echoes the last user message, or follows `model.script`: a list whose n-th entry answers the
n-th assistant turn of the conversation. An entry is a reply string or an object
`{"content", "tool_calls": [{"name", "arguments"}], "thinking", "delay"}`. In replies,
`{last_user}` and `{tool_results}` are replaced by the last user message and the latest tool
results. Tokens are counted with a simple word/punctuation tokenizer; replies stream word by
word with `model.chunk_delay` seconds between chunks.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from executions.engine.providers import (
    LLMResult,
    ModelConfig,
    OnDelta,
    ShouldStop,
    StreamStopped,
    token_usage,
)

_TOKEN = re.compile(r"\w+|[^\w\s]")
_CHUNK = re.compile(r"\s*\S+")


def count_tokens(text: str) -> int:
    return len(_TOKEN.findall(text or ""))


def _message_text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        text = content
    elif content is None:
        text = ""
    else:
        text = json.dumps(content, default=str)
    if message.get("tool_calls"):
        text += " " + json.dumps(message["tool_calls"], default=str)
    return text


class BuiltinProvider:
    def complete(
        self,
        config: ModelConfig,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        on_delta: OnDelta,
        should_stop: ShouldStop,
    ) -> LLMResult:
        turn = sum(1 for m in messages if m.get("role") == "assistant")
        last_user = next(
            (_message_text(m) for m in reversed(messages) if m.get("role") == "user"), ""
        )
        tool_results = []
        for message in reversed(messages):
            if message.get("role") != "tool":
                break
            tool_results.insert(0, _message_text(message))
        entry: Any = None
        if config.script and turn < len(config.script):
            entry = config.script[turn]
        if entry is None:
            if tool_results:
                entry = {"content": "Here is what I found: " + "; ".join(tool_results)}
            else:
                entry = {"content": f"Echo: {last_user}"}
        if isinstance(entry, str):
            entry = {"content": entry}

        def fill(text: str) -> str:
            return text.replace("{last_user}", last_user).replace(
                "{tool_results}", "; ".join(tool_results)
            )

        delay = float(entry.get("delay", config.delay) or 0.0)
        _sleep(delay, should_stop)
        thinking = fill(entry.get("thinking", "") or "")
        if thinking:
            on_delta("thinking", thinking)
        content = fill(entry.get("content", "") or "")
        for chunk in _CHUNK.findall(content):
            if should_stop():
                raise StreamStopped()
            on_delta("content", chunk)
            _sleep(config.chunk_delay, should_stop)
        calls = []
        for i, call in enumerate(entry.get("tool_calls") or []):
            calls.append(
                {
                    "id": call.get("id") or f"call_{turn}_{i}",
                    "name": call["name"],
                    "arguments": call.get("arguments") or {},
                }
            )
        prompt_tokens = sum(count_tokens(_message_text(m)) for m in messages)
        if tools:
            prompt_tokens += count_tokens(json.dumps(tools, default=str))
        completion_tokens = count_tokens(content) + count_tokens(thinking)
        completion_tokens += count_tokens(json.dumps(calls)) if calls else 0
        return LLMResult(
            content=content,
            tool_calls=calls,
            thinking=thinking,
            finish_reason="tool_calls" if calls else "stop",
            model=config.name,
            usage=token_usage(prompt_tokens, completion_tokens),
        )


def _sleep(seconds: float, should_stop: ShouldStop) -> None:
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return
        if should_stop():
            raise StreamStopped()
        time.sleep(min(left, 0.05))
