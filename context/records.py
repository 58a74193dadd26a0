"""The stored form of an item: metadata plus content as JSON bytes.

Keeping content serialised (and zlib-compressed above a threshold) costs a
decode per read but keeps memory near the data's own size, and every read
hands out a fresh copy that callers cannot use to change the store.
"""
from __future__ import annotations

import json
import sys
import zlib
from typing import Any

from messages.context import ContextItem


def encode_content(content: Any, compress_threshold: int) -> tuple[bytes, bool]:
    """Content as JSON bytes, compressed when larger than the threshold and it helps."""
    raw = json.dumps(content, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    if len(raw) > compress_threshold:
        packed = zlib.compress(raw, 6)
        if len(packed) < len(raw):
            return packed, True
    return raw, False


def decode_content(blob: bytes, compressed: bool) -> Any:
    return json.loads(zlib.decompress(blob) if compressed else blob)


class Record:
    """One stored item.  Only ``expires_at`` and ``last_used`` change in place;
    any other change makes a new Record, so a logged change keeps its state."""

    __slots__ = ("id", "type", "source", "priority", "tags", "task_id", "workflow_id",
                 "created_at", "updated_at", "ttl_s", "sliding_ttl", "version", "expires_at",
                 "blob", "compressed", "size", "last_used")

    def __init__(self, *, id: str, type: str, source: str, priority: int, tags: frozenset[str],
                 task_id: str | None, workflow_id: str | None, created_at: float,
                 updated_at: float, ttl_s: float, sliding_ttl: bool, version: int,
                 expires_at: float, blob: bytes, compressed: bool, last_used: int = 0):
        # Interned: thousands of items share a handful of types and sources.
        self.id = id
        self.type = sys.intern(type)
        self.source = sys.intern(source)
        self.priority = priority
        self.tags = tags
        self.task_id = task_id
        self.workflow_id = workflow_id
        self.created_at = created_at
        self.updated_at = updated_at
        self.ttl_s = ttl_s
        self.sliding_ttl = sliding_ttl
        self.version = version
        self.expires_at = expires_at
        self.blob = blob
        self.compressed = compressed
        self.last_used = last_used
        self.size = len(blob) + sum(len(text.encode()) for text in (
            id, type, source, task_id or "", workflow_id or "", *tags))

    @classmethod
    def from_item(cls, item: ContextItem, *, id: str, created_at: float, now: float, ttl_s: float,
                  sliding_ttl: bool, version: int, compress_threshold: int) -> "Record":
        blob, compressed = encode_content(item.content, compress_threshold)
        return cls(id=id, type=item.type, source=item.source, priority=item.priority,
                   tags=item.tags, task_id=item.task_id, workflow_id=item.workflow_id,
                   created_at=created_at, updated_at=now, ttl_s=ttl_s, sliding_ttl=sliding_ttl,
                   version=version, expires_at=now + ttl_s, blob=blob, compressed=compressed)

    @property
    def content(self) -> Any:
        return decode_content(self.blob, self.compressed)

    def expired(self, now: float) -> bool:
        return now >= self.expires_at

    def copy(self, expires_at: float) -> "Record":
        return Record(id=self.id, type=self.type, source=self.source, priority=self.priority,
                      tags=self.tags, task_id=self.task_id, workflow_id=self.workflow_id,
                      created_at=self.created_at, updated_at=self.updated_at, ttl_s=self.ttl_s,
                      sliding_ttl=self.sliding_ttl, version=self.version, expires_at=expires_at,
                      blob=self.blob, compressed=self.compressed, last_used=self.last_used)

    def to_item(self, expires_at: float | None = None) -> ContextItem:
        return ContextItem(type=self.type, content=self.content, source=self.source,
                           priority=self.priority, tags=self.tags, task_id=self.task_id,
                           workflow_id=self.workflow_id, id=self.id, ttl_s=self.ttl_s,
                           sliding_ttl=self.sliding_ttl, created_at=self.created_at,
                           updated_at=self.updated_at,
                           expires_at=self.expires_at if expires_at is None else expires_at,
                           version=self.version)
