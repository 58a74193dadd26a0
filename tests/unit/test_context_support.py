"""Helpers shared by the context tests (this module holds no tests)."""
from __future__ import annotations

from typing import Any

from context.backends import MemoryBackend
from context.repository import Change, Repository
from context.settings import ContextSettings
from messages.context import ContextItem


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self, now: float = 1_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def item(type: str = "prompt", content: Any = None, source: str = "test", **fields: Any) -> ContextItem:
    return ContextItem(type=type, content={"text": "hi"} if content is None else content,
                       source=source, **fields)


def repository(clock: FakeClock | None = None, backend: MemoryBackend | None = None,
               **settings: Any) -> tuple[Repository, list[Change]]:
    """A memory-backed repository and the list its changes are reported into."""
    changes: list[Change] = []
    repo = Repository(backend or MemoryBackend(), ContextSettings(**settings), clock or FakeClock(),
                      listener=changes.append)
    return repo, changes
