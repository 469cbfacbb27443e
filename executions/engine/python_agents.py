"""Python agents: functions registered with @agent and run with a recording context.

The registry is filled when the modules in settings.STEWARD_AGENT_MODULES are imported.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

logger = logging.getLogger("steward.engine")


@dataclass
class PythonAgent:
    name: str
    fn: Callable[..., Any]
    description: str = ""
    input_schema: dict | None = None
    output_schema: dict | None = None
    config: dict = field(default_factory=dict)


REGISTRY: dict[str, PythonAgent] = {}


def agent(
    name: str,
    *,
    input_schema: dict | None = None,
    output_schema: dict | None = None,
    description: str = "",
    **config: Any,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register `fn(ctx, input)` as the Python agent `name`."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        REGISTRY[name] = PythonAgent(
            name=name,
            fn=fn,
            description=description or (fn.__doc__ or "").strip().split("\n")[0],
            input_schema=input_schema,
            output_schema=output_schema,
            config=config,
        )
        return fn

    return register


def autodiscover() -> None:
    for module in getattr(settings, "STEWARD_AGENT_MODULES", []):
        try:
            importlib.import_module(module)
        except ImportError:
            logger.exception("could not import Python agent module %s", module)


def get(name: str) -> PythonAgent | None:
    return REGISTRY.get(name)
