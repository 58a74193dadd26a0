"""Where items persist.  The interface is three calls, so Redis or PostgreSQL fit too.

A backend applies a ``Batch`` atomically (all of it or none of it) and hands
back everything on ``load``; the repository keeps the working set and the
indexes in memory and rebuilds them from ``load`` when it opens.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Protocol

from messages.errors import ExecutionError, InitError

from .records import Record
from .settings import ContextSettings


@dataclass(frozen=True)
class KeyRecord:
    """A write's idempotency key and what it did: its answer, if it is sent again."""

    key: str
    op: str          # store | update | delete
    item_id: str
    version: int     # the item's version after the write (for a delete, the version deleted)
    seq: int         # the change's sequence number
    at: float        # wall clock of the write


@dataclass(frozen=True)
class Batch:
    """One atomic write.  ``seq`` is the last sequence number the batch uses.
    ``keys``: idempotency keys written with it; ``forget_keys``: old ones dropped."""

    seq: int
    puts: tuple[Record, ...] = ()
    deletes: tuple[str, ...] = ()
    expiries: Mapping[str, float] = field(default_factory=dict)
    keys: tuple[KeyRecord, ...] = ()
    forget_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    records: list[Record]
    seq: int
    keys: list[KeyRecord] = field(default_factory=list)


class Backend(Protocol):
    def load(self) -> Snapshot:
        """Every stored record (expired ones included) and the last sequence number."""

    def apply(self, batch: Batch) -> None:
        """Write all of ``batch`` or, raising a GrymError, none of it."""

    def close(self) -> None: ...


class MemoryBackend:
    """Nothing survives the process; a new repository on the same instance
    still sees what an abandoned one wrote, which is how tests simulate a crash."""

    def __init__(self) -> None:
        self._rows: dict[str, tuple[Record, float]] = {}
        self._keys: dict[str, KeyRecord] = {}
        self._seq = 0

    def load(self) -> Snapshot:
        return Snapshot([record.copy(expires_at) for record, expires_at in self._rows.values()],
                        self._seq, list(self._keys.values()))

    def apply(self, batch: Batch) -> None:
        for item_id in batch.deletes:
            self._rows.pop(item_id, None)
        for record in batch.puts:
            self._rows[record.id] = (record, record.expires_at)
        for item_id, expires_at in batch.expiries.items():
            self._rows[item_id] = (self._rows[item_id][0], expires_at)
        for key in batch.forget_keys:
            self._keys.pop(key, None)
        for key_record in batch.keys:
            self._keys[key_record.key] = key_record
        self._seq = batch.seq

    def close(self) -> None:
        self._rows.clear()
        self._keys.clear()


_COLUMNS = ("id", "type", "source", "priority", "tags", "task_id", "workflow_id", "created_at",
            "updated_at", "ttl_s", "sliding_ttl", "version", "expires_at", "compressed", "content")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, source TEXT NOT NULL, priority INTEGER NOT NULL,
    tags TEXT NOT NULL, task_id TEXT, workflow_id TEXT, created_at REAL NOT NULL,
    updated_at REAL NOT NULL, ttl_s REAL NOT NULL, sliding_ttl INTEGER NOT NULL,
    version INTEGER NOT NULL, expires_at REAL NOT NULL, compressed INTEGER NOT NULL,
    content BLOB NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
    key TEXT PRIMARY KEY, op TEXT NOT NULL, item_id TEXT NOT NULL, version INTEGER NOT NULL,
    seq INTEGER NOT NULL, at REAL NOT NULL
) WITHOUT ROWID;
"""
_KEY_COLUMNS = ("key", "op", "item_id", "version", "seq", "at")


class SQLiteBackend:
    """SQLite in WAL mode; every batch is one transaction, committed before it
    is acknowledged.  ``synchronous`` is NORMAL or FULL (see ContextSettings)."""

    def __init__(self, path: str, synchronous: str = "NORMAL"):
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)  # we issue BEGIN/COMMIT
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'FULL' else 'NORMAL'}")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise InitError(f"cannot open context store {path}: {exc}", {"path": path}) from None
        self.path = path

    def load(self) -> Snapshot:
        rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM items").fetchall()
        seq_row = self._db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()
        keys = self._db.execute(f"SELECT {', '.join(_KEY_COLUMNS)} FROM idempotency").fetchall()
        return Snapshot([_record(row) for row in rows], seq_row[0] if seq_row else 0,
                        [KeyRecord(*row) for row in keys])

    def apply(self, batch: Batch) -> None:
        db = self._db
        try:
            db.execute("BEGIN")
            db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in batch.deletes])
            db.executemany(f"INSERT OR REPLACE INTO items ({', '.join(_COLUMNS)}) "
                           f"VALUES ({', '.join('?' * len(_COLUMNS))})",
                           [_row(record) for record in batch.puts])
            db.executemany("UPDATE items SET expires_at = ? WHERE id = ?",
                           [(expires_at, i) for i, expires_at in batch.expiries.items()])
            db.executemany("DELETE FROM idempotency WHERE key = ?",
                           [(k,) for k in batch.forget_keys])
            db.executemany(f"INSERT OR REPLACE INTO idempotency ({', '.join(_KEY_COLUMNS)}) "
                           f"VALUES ({', '.join('?' * len(_KEY_COLUMNS))})",
                           [(k.key, k.op, k.item_id, k.version, k.seq, k.at) for k in batch.keys])
            db.execute("INSERT INTO meta (key, value) VALUES ('seq', ?) "
                       "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (batch.seq,))
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise ExecutionError(f"context store write failed: {exc}", {"path": self.path}) from None

    def close(self) -> None:
        self._db.close()


def _row(record: Record) -> tuple:
    return (record.id, record.type, record.source, record.priority,
            json.dumps(sorted(record.tags)), record.task_id, record.workflow_id,
            record.created_at, record.updated_at, record.ttl_s, int(record.sliding_ttl),
            record.version, record.expires_at, int(record.compressed), record.blob)


def _record(row: tuple) -> Record:
    (id_, type_, source, priority, tags, task_id, workflow_id, created_at, updated_at, ttl_s,
     sliding_ttl, version, expires_at, compressed, blob) = row
    return Record(id=id_, type=type_, source=source, priority=priority,
                  tags=frozenset(json.loads(tags)), task_id=task_id, workflow_id=workflow_id,
                  created_at=created_at, updated_at=updated_at, ttl_s=ttl_s,
                  sliding_ttl=bool(sliding_ttl), version=version, expires_at=expires_at,
                  blob=bytes(blob), compressed=bool(compressed))


def open_backend(settings: ContextSettings) -> Backend:
    if settings.persistence == "sqlite":
        return SQLiteBackend(settings.path, settings.synchronous)
    return MemoryBackend()
