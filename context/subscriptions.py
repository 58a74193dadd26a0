"""Who wants to hear about which changes, and a bounded log for those who missed some."""
from __future__ import annotations

import uuid
from collections import deque

from messages.context import ContextChange, ContextFilter
from messages.errors import NotFound

from .filters import matches
from .repository import Change

Delivery = tuple[str, ContextChange]


class Subscriptions:
    """Matches each change against every subscription's filter.

    An update is delivered when the item matched before it or matches after
    it, so a watcher also sees an item leave its filter.
    """

    def __init__(self, log_size: int, seq: int = 0):
        self._filters: dict[str, ContextFilter] = {}
        self._log: deque[Change] = deque(maxlen=log_size)
        self._seq = seq  # last sequence number seen

    def subscribe(self, f: ContextFilter, since_seq: int | None = None) -> tuple[str, list[ContextChange], bool]:
        """A new subscription id, the logged matching changes after ``since_seq``,
        and whether some may be missing (the log starts later, or ``since_seq``
        is ahead of this store, as after a restart without persistence)."""
        subscription_id = uuid.uuid4().hex
        self._filters[subscription_id] = f
        if since_seq is None:
            return subscription_id, [], False
        oldest_logged = self._log[0].seq if self._log else self._seq + 1
        gap = since_seq + 1 < oldest_logged or since_seq > self._seq
        missed = [self._message(change, subscription_id) for change in self._log
                  if change.seq > since_seq and self._wants(f, change)]
        return subscription_id, missed, gap

    def unsubscribe(self, subscription_id: str) -> None:
        if self._filters.pop(subscription_id, None) is None:
            raise NotFound(f"no subscription {subscription_id}", {"subscription_id": subscription_id})

    def publish(self, change: Change) -> list[Delivery]:
        """Log ``change``; the (subscription id, message) pairs to deliver, in order."""
        self._log.append(change)
        self._seq = change.seq
        return [(sid, self._message(change, sid)) for sid, f in self._filters.items()
                if self._wants(f, change)]

    def __len__(self) -> int:
        return len(self._filters)

    @staticmethod
    def _wants(f: ContextFilter, change: Change) -> bool:
        return matches(f, change.record) or (change.previous is not None and matches(f, change.previous))

    @staticmethod
    def _message(change: Change, subscription_id: str) -> ContextChange:
        return ContextChange(change.seq, change.kind, change.item, subscription_id)
