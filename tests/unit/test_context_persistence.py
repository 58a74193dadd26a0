"""Persistence: what was acknowledged survives a crash; what expired does not."""
from __future__ import annotations

import sqlite3

import pytest

from context import ContextManager, ContextSettings, MemoryBackend, SQLiteBackend
from messages.context import ContextFilter
from messages.errors import InitError, NotFound

from .test_context_support import FakeClock, item


def sqlite_settings(tmp_path, **fields) -> ContextSettings:
    return ContextSettings(persistence="sqlite", path=str(tmp_path / "ctx" / "context.db"), **fields)


def test_every_acknowledged_write_survives_a_crash(tmp_path):
    clock = FakeClock()
    settings = sqlite_settings(tmp_path, compress_threshold_bytes=1024)
    first = ContextManager(settings, clock=clock)
    first.store(item("audio_parameters", {"sample_rate": 8000}, id="kept", task_id="t1", tags={"a"}))
    first.store(item(id="gone"))
    first.store(item(id="big", content={"text": "long " * 1000}))
    updated = first.update("kept", {"content": {"channels": 2}, "priority": "critical"})
    first.delete("gone")
    before = {i: first.retrieve(i).item for i in ("kept", "big")}
    # No close(): the process "crashed".  A new manager opens the same file.
    second = ContextManager(settings, clock=clock)
    assert {i: second.retrieve(i).item for i in ("kept", "big")} == before
    assert before["kept"].content == {"sample_rate": 8000, "channels": 2}
    assert before["kept"].version == updated.version
    with pytest.raises(NotFound):
        second.retrieve("gone")
    # Indexes are rebuilt and the sequence goes on from where it was.
    assert [i.id for i in second.query(ContextFilter(task_id="t1", tags="a")).items] == ["kept"]
    assert second.store(item(id="next")).version > updated.seq
    assert second.stats().items == 3


def test_expired_items_do_not_come_back(tmp_path):
    clock = FakeClock()
    settings = sqlite_settings(tmp_path, default_ttl_s=10)
    first = ContextManager(settings, clock=clock)
    first.store(item(id="short"))
    first.store(item(id="long", ttl_s=100))
    first.close()
    clock.advance(50)
    second = ContextManager(settings, clock=clock)
    with pytest.raises(NotFound):
        second.retrieve("short")
    assert second.stats().items == 1 and second.stats().expirations == 1
    rows = sqlite3.connect(settings.path).execute("SELECT id FROM items").fetchall()
    assert rows == [("long",)]


def test_a_sliding_read_is_persisted(tmp_path):
    clock = FakeClock()
    settings = sqlite_settings(tmp_path, default_ttl_s=10, sliding_ttl=True)
    first = ContextManager(settings, clock=clock)
    first.store(item(id="k"))
    clock.advance(8)
    first.retrieve("k")
    clock.advance(8)  # past the first expiry time: only the persisted slide keeps it
    assert ContextManager(settings, clock=clock).retrieve("k").item.expires_at == clock.now + 10


def test_large_content_is_compressed_on_disk(tmp_path):
    settings = sqlite_settings(tmp_path, compress_threshold_bytes=4096)
    manager = ContextManager(settings)
    manager.store(item(id="big", content={"text": "abc " * 5000}))
    manager.store(item(id="small", content={"text": "abc"}))
    rows = dict(sqlite3.connect(settings.path).execute(
        "SELECT id, compressed FROM items").fetchall())
    size = sqlite3.connect(settings.path).execute(
        "SELECT length(content) FROM items WHERE id = 'big'").fetchone()[0]
    assert rows == {"big": 1, "small": 0} and size < 4096


@pytest.mark.parametrize("synchronous, level", [("NORMAL", 1), ("FULL", 2)])
def test_wal_mode_and_synchronous_level(tmp_path, synchronous, level):
    path = str(tmp_path / "c.db")
    backend = SQLiteBackend(path, synchronous)
    assert backend._db.execute("PRAGMA synchronous").fetchone()[0] == level
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_an_unopenable_path_is_an_init_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(InitError):
        SQLiteBackend(str(blocker / "context.db"))


def test_the_memory_backend_rebuilds_a_new_manager_too():
    clock = FakeClock()
    backend = MemoryBackend()
    first = ContextManager(clock=clock, backend=backend)
    first.store(item(id="k", content={"a": 1}, ttl_s=10, sliding_ttl=True))
    clock.advance(8)
    first.retrieve("k")
    clock.advance(8)
    second = ContextManager(clock=clock, backend=backend)
    assert second.retrieve("k").item == first.retrieve("k").item
