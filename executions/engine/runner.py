"""Runs one execution (the engine helper replaces this with the full runner)."""

from __future__ import annotations

from typing import Any


def run(execution_id: Any) -> None:
    from executions.models import Execution

    Execution.objects.get(pk=execution_id)
