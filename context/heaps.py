"""A min-heap of item ids whose keys change: old entries are skipped, not searched for."""
from __future__ import annotations

import heapq
from typing import Any, Callable, Collection


class LazyHeap:
    """Pops the id with the smallest current key.

    ``key_of(id)`` gives an id's current key, or None when it has none (gone,
    or not a candidate).  A change of key just pushes again; the entry that no
    longer matches is dropped when it surfaces.  Push only when a key changed,
    so an id has at most one live entry.  The heap is rebuilt when old entries
    outnumber live ones, so it stays O(live items).
    """

    def __init__(self, key_of: Callable[[str], Any], live_ids: Callable[[], Collection[str]]):
        self._key_of = key_of
        self._live_ids = live_ids
        self._heap: list[tuple[Any, str]] = []

    def push(self, item_id: str) -> None:
        key = self._key_of(item_id)
        if key is not None:
            heapq.heappush(self._heap, (key, item_id))
            if len(self._heap) > 2 * len(self._live_ids()) + 1024:
                self.rebuild()

    def pop(self, ready: Callable[[Any], bool] = lambda key: True) -> str | None:
        """Remove and return the id with the smallest key, if ``ready(key)``."""
        heap = self._heap
        while heap:
            key, item_id = heap[0]
            if self._key_of(item_id) != key:
                heapq.heappop(heap)
            elif ready(key):
                heapq.heappop(heap)
                return item_id
            else:
                return None
        return None

    def rebuild(self) -> None:
        entries = []
        for item_id in self._live_ids():
            key = self._key_of(item_id)
            if key is not None:
                entries.append((key, item_id))
        heapq.heapify(entries)
        self._heap = entries
