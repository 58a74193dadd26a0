"""A min-heap of item ids whose keys change: old entries are skipped, not searched for."""
from __future__ import annotations

import heapq
import itertools
from typing import Any, Callable, Collection


class LazyHeap:
    """Pops the id with the smallest current key.

    ``key_of(id)`` gives an id's current key, or None when it has none (gone,
    or not a candidate).  Push whenever an id's key changes.  Only an id's
    latest entry counts, and only while its key is still current, so an
    entry left by a deleted item cannot come back to life when the id is
    stored again with the same key.  The heap is rebuilt when old entries
    outnumber live ones, so it stays O(live items).
    """

    def __init__(self, key_of: Callable[[str], Any], live_ids: Callable[[], Collection[str]]):
        self._key_of = key_of
        self._live_ids = live_ids
        self._heap: list[tuple[Any, int, str]] = []
        self._latest: dict[str, int] = {}  # id -> token of its latest entry
        self._tokens = itertools.count()

    def push(self, item_id: str) -> None:
        key = self._key_of(item_id)
        if key is None:
            self._latest.pop(item_id, None)
            return
        token = next(self._tokens)
        self._latest[item_id] = token
        heapq.heappush(self._heap, (key, token, item_id))
        if len(self._heap) > 2 * len(self._live_ids()) + 1024:
            self.rebuild()

    def pop(self, ready: Callable[[Any], bool] = lambda key: True) -> str | None:
        """Remove and return the id with the smallest key, if ``ready(key)``."""
        heap = self._heap
        while heap:
            key, token, item_id = heap[0]
            if self._latest.get(item_id) != token or self._key_of(item_id) != key:
                heapq.heappop(heap)
            elif ready(key):
                heapq.heappop(heap)
                del self._latest[item_id]
                return item_id
            else:
                return None
        return None

    def rebuild(self) -> None:
        self._heap, self._latest = [], {}
        for item_id in self._live_ids():
            key = self._key_of(item_id)
            if key is not None:
                token = next(self._tokens)
                self._latest[item_id] = token
                self._heap.append((key, token, item_id))
        heapq.heapify(self._heap)
