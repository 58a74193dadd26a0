"""A copy of the context store kept by the ContextActor's change stream, so that
whoever injects context into a task (the host, routing in the caller) builds the
model's context without a round trip to the actor.

The copy is exact, by sequence numbers: it is read in full once (query pages),
then every change applies in order; a change whose ``seq`` is not the next one
means some were missed, and the copy is read in full again. During a read, the
changes and the pages come from the actor in the order it handled them (one
sender, one receiver), so the copy after the last page is the store as of that
page. Pages are read oldest write first; a change to an item already read moves
the items after it one place towards the start, so when such changes came
before a page, as many unread items may have slipped in front of it, and the
read goes on from that many places earlier (items read twice keep their newest
version): none is skipped.

What it serves is what ``ContextManager.get_context_for_model`` gives a task
with no items of its own: the newest shared items (no task id) of the adapter's
types, shaped by the adapter. Where the copy cannot answer exactly it says so
(None) and the caller asks the actor: before the first read and during a
re-read, when the task has items of its own, when an item in the answer has a
sliding TTL (a read restarts it), and before the copy has seen a write its
caller made (``written``). One difference: a copy's read does not mark items
recently used, which only breaks ties between equal candidates for eviction.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping

from messages.context import (
    ChangeKind, ContextChange, ContextFilter, ContextItem, ContextItems, ContextSubscribed,
    MAX_QUERY_LIMIT, Order, QueryContext,
)

from .adapters import ContextAdapter, PassThroughAdapter, discover_adapters

PAGE = MAX_QUERY_LIMIT
MODEL_LIMIT = ContextFilter().limit   # items a model context reads, as the manager's default
REMOVALS = (ChangeKind.DELETED, ChangeKind.EXPIRED, ChangeKind.EVICTED)


class ContextReplica:
    """Plain state machine: the caller sends what ``start``, ``on_change`` and
    ``on_page`` return (QueryContext pages) to the context actor."""

    def __init__(self, adapters: Mapping[str, Callable[[], ContextAdapter]] | None = None,
                 clock: Callable[[], float] = time.time):
        self._factories = dict(discover_adapters() if adapters is None else adapters)
        self._adapters: dict[str, ContextAdapter] = {}
        self._clock = clock
        self._items: dict[str, ContextItem] = {}
        self._own: dict[str, set[str]] = {}       # task id -> ids of its items
        self._task_of: dict[str, str] = {}        # and back
        self.seq: int | None = None               # the last change applied; None while reading
        self._last_seen = 0                       # the last change received (during a read too)
        self._offset = 0                          # the next page's
        self._shifted = 0                         # changes to items already read, since that page
        self._min_seq = 0                         # a write of our caller's that must be in
        self._cache: dict[str, tuple[int, float, dict[str, Any], tuple[str, ...]]] = {}
        self.reads = 0                            # full reads started (the first, and each gap)

    # -- being kept in step ---------------------------------------------------------------
    def start(self, subscribed: ContextSubscribed) -> QueryContext:
        """A new subscription: read everything again."""
        self._last_seen = subscribed.seq
        return self.read_again()

    def on_change(self, change: ContextChange) -> QueryContext | None:
        if change.seq <= self._last_seen:
            return None  # already had it (a resumed subscription's replay)
        if change.seq != self._last_seen + 1:
            self._last_seen = change.seq
            return self.read_again()  # a gap: some changes never came
        self._last_seen = change.seq
        item = change.item
        known = item.id in self._items or item.id in self._task_of
        if self.seq is None and known:
            self._shifted += 1  # an item already read moved (or went): the rest moved up
        self._apply(change.kind, change.item)
        if self.seq is not None:
            self.seq = change.seq
            self._cache.clear()
        return None

    def on_page(self, page: ContextItems) -> QueryContext | None:
        if self.seq is not None:
            return None  # a page of a read that a gap restarted, come after the new one ended
        for item in page.items:
            current = self._items.get(item.id)
            if current is None or item.version >= current.version:  # read twice: the newest
                self._apply(ChangeKind.STORED, item)
        # Changes to items already read came between the last page and this one: as
        # many unread items moved in front of this page's offset. Read again from there.
        skipped, self._shifted = min(self._shifted, self._offset), 0
        if skipped:
            self._offset -= skipped
            return self._query()
        self._offset += len(page.items)
        if len(page.items) == PAGE and self._offset < page.total:
            return self._query()
        self.seq = self._last_seen  # every change up to the last page's is in
        self._cache.clear()
        return None

    def written(self, seq: int) -> None:
        """Our caller's own write was acknowledged at ``seq``: answer only once it is in."""
        self._min_seq = max(self._min_seq, seq)

    def reset(self) -> None:
        """The subscription ended: serve nothing until the next ``start``."""
        self.seq = None
        self._cache.clear()

    def read_again(self) -> QueryContext:
        """Start a full read (also after a page was refused)."""
        self.seq, self.reads = None, self.reads + 1
        self._items.clear()
        self._own.clear()
        self._task_of.clear()
        self._cache.clear()
        self._offset = self._shifted = 0
        return self._query()

    def _query(self) -> QueryContext:
        return QueryContext(ContextFilter(order=Order.OLDEST, limit=PAGE, offset=self._offset))

    def _apply(self, kind: ChangeKind, item: ContextItem) -> None:
        self._forget(item.id)  # an update may move an item to another task, or to none
        if kind in REMOVALS:
            return
        if item.task_id is None:
            self._items[item.id] = item
        else:
            self._own.setdefault(item.task_id, set()).add(item.id)
            self._task_of[item.id] = item.task_id

    def _forget(self, item_id: str) -> None:
        self._items.pop(item_id, None)
        task_id = self._task_of.pop(item_id, None)
        if task_id is not None:
            ids = self._own[task_id]
            ids.discard(item_id)
            if not ids:
                del self._own[task_id]

    # -- what it serves -----------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.seq is not None and self.seq >= self._min_seq

    def model_context(self, model_type: str, task_id: str) -> tuple[dict[str, Any], tuple[str, ...]] | None:
        """For task ``task_id``: (the adapted context, the ids of its items, oldest write
        first), or None when only the actor can answer exactly. Raises what the
        adapter raises (InvalidInput)."""
        if not self.ready or task_id in self._own:
            return None
        now = self._clock()
        cached = self._cache.get(model_type)
        if cached is not None and cached[0] == self.seq and now < cached[1]:
            return cached[2], cached[3]
        adapter = self._adapter(model_type)
        types = adapter.item_types
        items: list[ContextItem] = []
        if types is None or types:
            live = [i for i in self._items.values() if (types is None or i.type in types)
                    and (i.expires_at is None or now < i.expires_at)]
            live.sort(key=lambda i: -i.version)
            items = live[:MODEL_LIMIT]
            if any(i.sliding_ttl for i in items):
                return None  # reading them restarts their TTL: the actor must
            items.reverse()  # adapters merge oldest write first, so the newest wins
        data, ids = adapter.adapt(items), tuple(i.id for i in items)
        # Valid until a change, or until the first of its items expires.
        until = min((i.expires_at for i in items if i.expires_at is not None), default=float("inf"))
        self._cache[model_type] = (self.seq, until, data, ids)
        return data, ids

    def _adapter(self, model_type: str) -> ContextAdapter:
        if model_type not in self._adapters:
            self._adapters[model_type] = self._factories.get(model_type, PassThroughAdapter)()
        return self._adapters[model_type]
