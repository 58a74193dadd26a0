"""The store itself: items, their lifetimes and limits, indexes, and persistence.

Every write is planned in full first, then handed to the backend as one
batch, and only once that succeeds is memory changed and the change reported.
So a refused or failed write leaves nothing behind.

Lifetimes: every item expires ``ttl_s`` after its last write.  With a sliding
TTL (the item's ``sliding_ttl``, else the configured default) a read restarts
it too.  Expired items are never returned; they are removed when a request
touches them, when room is needed, and by ``sweep``.

Limits: past ``max_items`` or ``max_bytes`` the store evicts the lowest
priority first, then the soonest to expire, then the least recently used.
Critical items are never evicted; the item being written always stays.
"""
from __future__ import annotations

import dataclasses
import time
import uuid
from collections import OrderedDict
from typing import Any, Callable, Iterable, Mapping

from messages.context import CRITICAL, ChangeKind, ContextFilter, ContextItem, ContextStats, normalise_changes
from messages.errors import Conflict, NotFound, Overloaded

from .backends import Backend, Batch, KeyRecord
from .filters import matches, sort_key
from .heaps import LazyHeap
from .indexes import Indexes
from .merge import merge_patch
from .records import Record
from .settings import ContextSettings

Clock = Callable[[], float]
IdempotencyKey = tuple[str, str]  # (the key, the operation: store | update | delete)


class Change:
    """One applied change; ``item`` is decoded on first use and then kept."""

    __slots__ = ("seq", "kind", "record", "previous", "_expires_at", "_item")

    def __init__(self, seq: int, kind: ChangeKind, record: Record, previous: Record | None = None):
        self.seq = seq
        self.kind = kind
        self.record = record
        self.previous = previous  # the item before an update, so watchers see it leave a filter
        self._expires_at = record.expires_at  # a later sliding read must not rewrite history
        self._item: ContextItem | None = None

    @property
    def item(self) -> ContextItem:
        if self._item is None:
            self._item = self.record.to_item(self._expires_at)
        return self._item


class Repository:
    def __init__(self, backend: Backend, settings: ContextSettings, clock: Clock = time.time,
                 listener: Callable[[Change], None] | None = None):
        self._backend = backend
        self._settings = settings
        self._clock = clock
        self._listener = listener or (lambda change: None)
        self._records: dict[str, Record] = {}
        self._keys: OrderedDict[str, KeyRecord] = OrderedDict()  # oldest write first
        self._indexes = Indexes()
        self._by_expiry = LazyHeap(self._expiry_key, self._records.keys)
        self._by_eviction = LazyHeap(self._eviction_key, self._records.keys)
        self._seq = 0
        self._tick = 0  # logical clock for least-recently-used
        self._bytes = 0
        self._critical_items = 0
        self._critical_bytes = 0
        self._evictions = 0
        self._expirations = 0
        self.candidates_examined = 0  # how many items queries have looked at, for tests
        self._load()

    @property
    def seq(self) -> int:
        """Sequence number of the last change."""
        return self._seq

    # ---- requests ----------------------------------------------------------

    def store(self, item: ContextItem, key: str | None = None) -> Change:
        """Store ``item`` (a new id if it has none), replacing an item with its id.
        ``key``: its idempotency key, kept with the change (see ``recall``).

        Raises Overloaded when only critical items are left to evict.
        """
        now = self._clock()
        item_id = item.id or uuid.uuid4().hex
        existing = self._existing(item_id, now)
        record = self._record_for(item, item_id, existing.created_at if existing else now, now)
        kind = ChangeKind.UPDATED if existing else ChangeKind.STORED
        return self._write(record, kind, existing, now, _key(key, "store"))

    def recall(self, key: str, op: str, item_id: str | None) -> KeyRecord | None:
        """What the write with idempotency ``key`` did, if it was applied within
        ``idempotency_ttl_s``; None if it was not. Raises Conflict if the key was
        used for another operation or item (a key names one request)."""
        found = self._keys.get(key)
        if found is None or found.at <= self._clock() - self._settings.idempotency_ttl_s:
            return None
        if found.op != op or (item_id is not None and item_id != found.item_id):
            raise Conflict(f"idempotency key {key!r} was used for another request "
                           f"({found.op} of item {found.item_id})",
                           {"idempotency_key": key, "op": found.op, "item_id": found.item_id})
        return found

    def retrieve(self, item_id: str) -> ContextItem:
        now = self._clock()
        record = self._live(item_id, now)
        self._touch([record], now)
        return record.to_item()

    def query(self, f: ContextFilter) -> tuple[list[ContextItem], int]:
        """One page of the items matching ``f`` and how many match in all."""
        now = self._clock()
        ids = self._indexes.candidates(f)
        pool: Iterable[Record] = self._records.values() if ids is None else map(self._records.__getitem__, ids)
        matched, expired = [], []
        for record in pool:
            self.candidates_examined += 1
            if record.expired(now):
                expired.append(record)
            elif matches(f, record):
                matched.append(record)
        if expired:
            self._commit([(ChangeKind.EXPIRED, r) for r in expired])
        matched.sort(key=sort_key(f.order))
        page = matched[f.offset:f.offset + f.limit]
        self._touch(page, now)
        return [record.to_item() for record in page], len(matched)

    def update(self, item_id: str, changes: Mapping[str, Any], expected_version: int | None = None,
               key: str | None = None) -> Change:
        """Apply ``changes`` field by field; ``content`` is a JSON Merge Patch.

        Raises NotFound, Conflict (``expected_version`` is not the current one;
        details carry the current item), InvalidInput, or Overloaded.
        """
        now = self._clock()
        current = self._live(item_id, now)
        if expected_version is not None and expected_version != current.version:
            item = current.to_item()
            raise Conflict(f"item {item_id} is at version {current.version}, not {expected_version}",
                           {"item_id": item_id, "expected_version": expected_version,
                            "current_version": current.version, "current": item.to_dict()})
        changes = normalise_changes(changes)
        item = current.to_item()
        if "content" in changes:
            changes["content"] = merge_patch(item.content, changes["content"])
        item = dataclasses.replace(item, **changes)
        record = self._record_for(item, item_id, current.created_at, now)
        return self._write(record, ChangeKind.UPDATED, current, now, _key(key, "update"))

    def delete(self, item_id: str, key: str | None = None) -> Change:
        current = self._live(item_id, self._clock())
        return self._commit([(ChangeKind.DELETED, current)], key=_key(key, "delete"))[-1]

    def sweep(self, max_items: int) -> int:
        """Remove up to ``max_items`` expired items, soonest-expired first; how many went."""
        now = self._clock()
        popped = []
        while len(popped) < max_items and (item_id := self._by_expiry.pop(lambda t: t <= now)):
            popped.append(item_id)
        if popped:
            self._commit([(ChangeKind.EXPIRED, self._records[i]) for i in popped],
                         restore=[(self._by_expiry, i) for i in popped])
        return len(popped)

    def stats(self) -> ContextStats:
        return ContextStats(items=len(self._records), bytes=self._bytes,
                            evictions=self._evictions, expirations=self._expirations)

    def close(self) -> None:
        self._backend.close()

    # ---- lifetimes and room ------------------------------------------------

    def _record_for(self, item: ContextItem, item_id: str, created_at: float, now: float) -> Record:
        """The stored form of ``item``; unset TTL settings take the configured defaults."""
        sliding = self._settings.sliding_ttl if item.sliding_ttl is None else item.sliding_ttl
        return Record.from_item(item, id=item_id, created_at=created_at, now=now,
                                ttl_s=item.ttl_s or self._settings.default_ttl_s, sliding_ttl=sliding,
                                version=0, compress_threshold=self._settings.compress_threshold_bytes)

    def _existing(self, item_id: str, now: float) -> Record | None:
        """The live record, or None; an expired one is removed on the way."""
        record = self._records.get(item_id)
        if record is not None and record.expired(now):
            self._commit([(ChangeKind.EXPIRED, record)])
            return None
        return record

    def _live(self, item_id: str, now: float) -> Record:
        record = self._existing(item_id, now)
        if record is None:
            raise NotFound(f"no context item {item_id}", {"item_id": item_id})
        return record

    def _touch(self, records: list[Record], now: float) -> None:
        """Mark records used; restart sliding TTLs (persisted first)."""
        expiries = {r.id: now + r.ttl_s for r in records if r.sliding_ttl and now + r.ttl_s != r.expires_at}
        if expiries:
            self._backend.apply(Batch(self._seq, expiries=expiries))
        for record in records:
            self._tick += 1
            record.last_used = self._tick
            if record.id in expiries:
                record.expires_at = expiries[record.id]
                self._by_expiry.push(record.id)
            self._by_eviction.push(record.id)

    def _write(self, record: Record, kind: ChangeKind, previous: Record | None, now: float,
               key: IdempotencyKey | None = None) -> Change:
        """Store ``record`` (replacing ``previous``), making room first."""
        def projected() -> tuple[int, int]:
            return (len(self._records) + (previous is None),
                    self._bytes + record.size - (previous.size if previous else 0))

        count, size = projected()
        if not self._fits(count, size):
            self._expire_due(now, count, size)
            count, size = projected()
        victims, popped = [], []
        if not self._fits(count, size):
            self._check_room_beyond_critical(record, previous)
            while not self._fits(count, size):
                item_id = self._by_eviction.pop()
                popped.append((self._by_eviction, item_id))
                if previous is not None and item_id == previous.id:
                    continue  # the item being written stays
                victim = self._records[item_id]
                victims.append((ChangeKind.EVICTED, victim))
                count, size = count - 1, size - victim.size
        return self._commit(victims, put=(kind, record, previous), restore=popped, key=key)[-1]

    def _expire_due(self, now: float, count: int, size: int) -> None:
        """Drop expired items, soonest first, until ``count``/``size`` fit."""
        popped = []
        while not self._fits(count, size) and (item_id := self._by_expiry.pop(lambda t: t <= now)):
            popped.append(item_id)
            count, size = count - 1, size - self._records[item_id].size
        if popped:
            self._commit([(ChangeKind.EXPIRED, self._records[i]) for i in popped],
                         restore=[(self._by_expiry, i) for i in popped])

    def _check_room_beyond_critical(self, record: Record, previous: Record | None) -> None:
        replaced_critical = previous is not None and previous.priority >= CRITICAL
        critical_items = self._critical_items - replaced_critical
        critical_bytes = self._critical_bytes - (previous.size if replaced_critical else 0)
        if not self._fits(critical_items + 1, critical_bytes + record.size):
            raise Overloaded(
                f"context store full: {critical_items} critical items ({critical_bytes} bytes) cannot "
                f"be evicted to fit this {record.size}-byte item (max_items={self._settings.max_items}, "
                f"max_bytes={self._settings.max_bytes})",
                {"critical_items": critical_items, "critical_bytes": critical_bytes,
                 "item_bytes": record.size, "max_items": self._settings.max_items,
                 "max_bytes": self._settings.max_bytes})

    def _fits(self, count: int, size: int) -> bool:
        return count <= self._settings.max_items and size <= self._settings.max_bytes

    # ---- applying changes --------------------------------------------------

    def _commit(self, removals: list[tuple[ChangeKind, Record]],
                put: tuple[ChangeKind, Record, Record | None] | None = None,
                restore: list[tuple[LazyHeap, str]] = (),
                key: IdempotencyKey | None = None) -> list[Change]:
        """Persist removals then ``put`` as one batch, then apply them in memory.

        ``key`` is the idempotency key of the request's own change (the last one),
        written in the same batch: a write is never applied without its key.
        If the backend refuses, heap entries popped while planning (``restore``)
        go back and nothing else has changed.
        """
        seq = self._seq
        changes = []
        for kind, record in removals:
            seq += 1
            changes.append(Change(seq, kind, record))
        if put is not None:
            kind, record, previous = put
            seq += 1
            record.version = seq  # versions come from the sequence, assigned here
            changes.append(Change(seq, kind, record, previous))
        keys: tuple[KeyRecord, ...] = ()
        forget: tuple[str, ...] = ()
        if key is not None:
            now = self._clock()
            last = changes[-1]
            keys = (KeyRecord(key[0], key[1], last.record.id, last.record.version, last.seq, now),)
            forget = self._keys_to_forget(now)
        try:
            self._backend.apply(Batch(seq, puts=(put[1],) if put else (),
                                      deletes=tuple(record.id for _, record in removals),
                                      keys=keys, forget_keys=forget))
        except Exception:
            for heap, item_id in restore:
                heap.push(item_id)
            raise
        self._seq = seq
        for old in forget:
            self._keys.pop(old, None)
        for key_record in keys:
            self._keys.pop(key_record.key, None)  # a reused expired key moves to the end
            self._keys[key_record.key] = key_record
        for kind, record in removals:
            self._forget(record)
            self._evictions += kind is ChangeKind.EVICTED
            self._expirations += kind is ChangeKind.EXPIRED
        if put is not None:
            self._remember(put[1], put[2])
        for change in changes:
            self._listener(change)
        return changes

    def _keys_to_forget(self, now: float) -> tuple[str, ...]:
        """The oldest keys: expired ones, and enough to stay within ``idempotency_keys``."""
        over = len(self._keys) + 1 - self._settings.idempotency_keys
        cutoff = now - self._settings.idempotency_ttl_s
        out = []
        for key, key_record in self._keys.items():
            if len(out) >= over and key_record.at > cutoff:
                break
            out.append(key)
        return tuple(out)

    def _remember(self, record: Record, previous: Record | None) -> None:
        if previous is not None:
            self._forget(previous)
        self._add(record)
        self._tick += 1
        record.last_used = self._tick
        self._by_expiry.push(record.id)
        self._by_eviction.push(record.id)

    def _add(self, record: Record) -> None:
        self._records[record.id] = record
        self._indexes.add(record)
        self._bytes += record.size
        if record.priority >= CRITICAL:
            self._critical_items += 1
            self._critical_bytes += record.size

    def _forget(self, record: Record) -> None:
        del self._records[record.id]
        self._indexes.remove(record)
        self._bytes -= record.size
        if record.priority >= CRITICAL:
            self._critical_items -= 1
            self._critical_bytes -= record.size

    def _expiry_key(self, item_id: str) -> float | None:
        record = self._records.get(item_id)
        return None if record is None else record.expires_at

    def _eviction_key(self, item_id: str) -> tuple[int, float, int] | None:
        record = self._records.get(item_id)
        if record is None or record.priority >= CRITICAL:
            return None
        return record.priority, record.expires_at, record.last_used

    def _load(self) -> None:
        """Rebuild memory from the backend; what expired meanwhile is dropped."""
        snapshot = self._backend.load()
        now = self._clock()
        live = sorted((r for r in snapshot.records if not r.expired(now)), key=lambda r: r.version)
        expired = [r.id for r in snapshot.records if r.expired(now)]
        self._seq = max([snapshot.seq, *(r.version for r in live)])
        self._keys = OrderedDict((k.key, k) for k in sorted(snapshot.keys, key=lambda k: k.at))
        if expired:
            self._backend.apply(Batch(self._seq, deletes=tuple(expired)))
            self._expirations += len(expired)
        for record in live:  # least recently written counts as least recently used
            self._tick += 1
            record.last_used = self._tick
            self._add(record)
        self._by_expiry.rebuild()
        self._by_eviction.rebuild()


def _key(key: str | None, op: str) -> IdempotencyKey | None:
    return None if key is None else (key, op)
