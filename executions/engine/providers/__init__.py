"""Model providers behind one small interface.

Messages are OpenAI-shaped dicts (`role` system/user/assistant/tool, `content`, `tool_calls`
[{id, name, arguments}], `tool_call_id`); each provider converts to its own wire format. A call
streams deltas through `on_delta(kind, text)` (kind is "content" or "thinking") and checks
`should_stop()` between chunks so a cancelled execution closes the connection mid-stream.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from django.conf import settings

from executions.engine import pricing

OnDelta = Callable[[str, str], None]
ShouldStop = Callable[[], bool]


class ProviderError(Exception):
    """A provider call failed. `transient` errors (429, 5xx, timeouts) are retried."""

    def __init__(self, message: str, *, transient: bool = False, status: int | None = None):
        super().__init__(message)
        self.transient = transient
        self.status = status


class StreamStopped(Exception):
    """The caller asked to stop (cancel, shutdown) while the response was streaming."""


@dataclass
class ModelConfig:
    provider: str = "builtin"
    name: str = "echo"
    base_url: str = ""
    api_key: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    # builtin only: scripted replies, streaming chunk delay, a fixed think time.
    script: list[Any] | None = None
    chunk_delay: float = 0.0
    delay: float = 0.0
    timeout: float = 120.0
    max_retries: int = 3

    @property
    def simulated(self) -> bool:
        return self.provider == "builtin"

    def describe(self) -> dict[str, Any]:
        return {"provider": self.provider, "model": self.name}


def token_usage(prompt: int, completion: int, total: int | None = None) -> dict[str, int]:
    """The one shape of a call's usage, whichever provider reported it. `total` is what the
    server said when it says it (OpenAI-compatible servers), else the sum."""
    prompt, completion = int(prompt or 0), int(completion or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion if total is None else int(total or 0),
    }


@dataclass
class LLMResult:
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    thinking: str = ""
    finish_reason: str = "stop"
    model: str = ""
    usage: dict[str, int] = field(default_factory=dict)

    def as_output(self) -> dict[str, Any]:
        return {
            "role": "assistant",
            "content": self.content,
            "tool_calls": self.tool_calls,
            "thinking": self.thinking,
            "finish_reason": self.finish_reason,
            "model": self.model,
        }


class Provider(Protocol):
    def complete(
        self,
        config: ModelConfig,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]],
        *,
        on_delta: OnDelta,
        should_stop: ShouldStop,
    ) -> LLMResult: ...


_SETTING_KEYS = {
    "temperature",
    "top_p",
    "max_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
}


def resolve(model: Any, override: Any = None, extra_settings: dict | None = None) -> ModelConfig:
    """A ModelConfig from a version's `model` (a name, "provider:name", or an object), with a
    step's `model` / `settings` on top."""
    base = _as_dict(model)
    if override is not None:
        base = {**base, **_as_dict(override)}
    provider = base.get("provider") or "builtin"
    name = base.get("name") or base.get("model") or base.get("model_id") or _default_name(provider)
    merged_settings = {k: v for k, v in base.items() if k in _SETTING_KEYS}
    merged_settings.update(base.get("settings") or {})
    for key, value in (extra_settings or {}).items():
        if key in _SETTING_KEYS:
            merged_settings[key] = value
        elif key == "model" and isinstance(value, str):
            name = value
    return ModelConfig(
        provider=provider,
        name=name,
        base_url=base.get("base_url") or _default_base_url(provider),
        api_key=base.get("api_key") or _default_key(provider),
        settings=merged_settings,
        script=base.get("script"),
        chunk_delay=float(base.get("chunk_delay", 0.0) or 0.0),
        delay=float(base.get("delay", 0.0) or 0.0),
        timeout=float(base.get("timeout", 120.0) or 120.0),
        max_retries=int(base.get("max_retries", 3)),
    )


def _as_dict(model: Any) -> dict[str, Any]:
    if model is None:
        return {}
    if isinstance(model, str):
        if ":" in model:
            provider, name = model.split(":", 1)
            return {"provider": provider, "name": name}
        return {"name": model}
    return dict(model)


def _default_name(provider: str) -> str:
    return {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}.get(provider, "echo")


def _default_base_url(provider: str) -> str:
    if provider == "openai":
        return settings.OPENAI_BASE_URL
    if provider == "anthropic":
        return settings.ANTHROPIC_BASE_URL
    return ""


def _default_key(provider: str) -> str:
    if provider == "openai":
        return settings.OPENAI_API_KEY
    if provider == "anthropic":
        return settings.ANTHROPIC_API_KEY
    return ""


def get(provider: str) -> Provider:
    # Each provider (and its SDK) is imported when first asked for: a worker preloads them at
    # start (preload below), while a web process that never calls a model never pays for them.
    if provider == "builtin":
        from executions.engine.providers.builtin import BuiltinProvider

        return BuiltinProvider()
    if provider == "openai":
        from executions.engine.providers.openai import OpenAIProvider

        return OpenAIProvider()
    if provider == "anthropic":
        from executions.engine.providers.anthropic import AnthropicProvider

        return AnthropicProvider()
    raise ProviderError(f"unknown model provider {provider!r}")


def preload() -> None:
    """Import every provider (and its SDK) now: a worker's first model call must not pay for
    importing an SDK, which takes seconds on a busy machine and holds the import lock."""
    for name in ("builtin", "openai", "anthropic"):
        get(name)
    # Imported here: the SDKs load their resource modules lazily, on first use of a client.
    import anthropic
    import openai

    loaded = (
        openai.OpenAI(api_key="preload", base_url="http://127.0.0.1:9").chat.completions.create,
        anthropic.Anthropic(api_key="preload", base_url="http://127.0.0.1:9").messages.create,
    )
    del loaded
    # The price tables load on the first priced call (~0.4 s of CPU, seconds on a busy
    # machine, taken from the runs in flight): load them now.
    pricing.cost("openai", "preload", {"prompt_tokens": 1, "completion_tokens": 1})


def complete_with_retries(
    config: ModelConfig,
    messages: list[dict[str, Any]],
    tools: list[dict[str, Any]],
    *,
    on_delta: OnDelta,
    should_stop: ShouldStop,
    on_retry: Callable[[int, ProviderError, float], None],
    base_delay: float = 0.5,
) -> LLMResult:
    """Call the provider, retrying transient errors with exponential backoff. `on_retry` is told
    about each retry so it can be recorded in the execution's history."""
    provider = get(config.provider)
    attempt = 0
    while True:
        try:
            return provider.complete(
                config, messages, tools, on_delta=on_delta, should_stop=should_stop
            )
        except StreamStopped:
            raise
        except Exception as exc:
            # A stream closed by the watchdog surfaces as a connection error: it is a stop.
            if should_stop():
                raise StreamStopped() from None
            if not isinstance(exc, ProviderError):
                raise
            if not exc.transient or attempt >= config.max_retries:
                raise
            delay = base_delay * (2**attempt)
            attempt += 1
            on_retry(attempt, exc, delay)
            # Sleep in slices so a cancel is noticed during the backoff too.
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if should_stop():
                    raise StreamStopped() from None
                time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


def register_closer(should_stop: ShouldStop, closer: Callable[[], Any]) -> None:
    """Let the caller's watchdog close this call (e.g. the HTTP stream) from another thread."""
    register = getattr(should_stop, "register", None)
    if register is not None:
        register(closer)


_clients: dict[tuple, Any] = {}
_clients_lock = threading.Lock()


def shared_client(factory: Callable[..., Any], config: ModelConfig) -> Any:
    """One SDK client (and connection pool) per SDK and endpoint, shared by threads: creating
    one per call costs more than a short model reply. SDK retries are off; the engine retries."""
    key = (factory, config.base_url, config.api_key, config.timeout)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = factory(
                base_url=config.base_url or None,
                api_key=config.api_key or "not-needed",
                max_retries=0,
                timeout=config.timeout,
            )
            _clients[key] = client
    return client


def error_message(exc: Any) -> str:
    """The provider's own error message from an SDK status error (both SDKs nest it the same
    way: {"error": {"message": …}})."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return str(getattr(exc, "message", exc))
