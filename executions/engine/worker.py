"""Worker loop (the engine helper replaces this with the full worker)."""

from __future__ import annotations


class Worker:
    def __init__(self, *, concurrency: int = 1, name: str = "worker") -> None:
        self.concurrency = concurrency
        self.name = name

    def run(self) -> None:
        return None
