"""Idempotency keys: a write sent again with its key applies once, also after a crash
between applying it and acknowledging it; keys are kept for a while, then forgotten."""
from __future__ import annotations

import sqlite3

import pytest

from context import ContextManager, ContextSettings, MemoryBackend
from messages.context import ContextFilter, DeleteContext, StoreContext
from messages.errors import Conflict, InvalidInput, NotFound

from .test_context_support import FakeClock, item


def managers(tmp_path):
    """(settings, a factory of managers on the same store): SQLite, and memory."""
    sqlite = ContextSettings(persistence="sqlite", path=str(tmp_path / "c.db"))
    backend = MemoryBackend()
    return [(sqlite, lambda clock, s=sqlite: ContextManager(s, clock=clock)),
            (ContextSettings(), lambda clock: ContextManager(ContextSettings(), clock=clock,
                                                             backend=backend))]


@pytest.mark.parametrize("which", [0, 1], ids=["sqlite", "memory"])
def test_a_retried_write_applies_once_across_a_crash(tmp_path, which):
    _, make = managers(tmp_path)[which]
    clock = FakeClock()
    first = make(clock)
    stored = first.store(item(content={"n": 1}), idempotency_key="k-store")  # no id: a new one
    updated = first.update(stored.item_id, {"content": {"n": 2}}, expected_version=stored.version,
                           idempotency_key="k-update")
    other = first.store(item(id="other"))
    deleted = first.delete("other", idempotency_key="k-delete")
    # The process dies before the acknowledgements reach the caller; the caller sends
    # each write again, with its key, to the restarted actor (on the same store).
    second = make(clock)
    seq = second.seq
    assert second.store(item(content={"n": 1}), idempotency_key="k-store") == stored
    # A stale expected_version would be a CONFLICT if it were applied again.
    assert second.update(stored.item_id, {"content": {"n": 2}}, expected_version=stored.version,
                         idempotency_key="k-update") == updated
    assert second.delete("other", idempotency_key="k-delete") == deleted
    assert second.seq == seq, "nothing was applied again"
    assert second.query(ContextFilter()).total == 1
    assert second.retrieve(stored.item_id).item.content == {"n": 2}
    assert other.item_id == "other"


def test_without_a_key_a_retried_store_applies_twice(tmp_path):
    """What the keys are for (and that the test above can fail)."""
    manager = ContextManager(ContextSettings(), clock=FakeClock())
    manager.store(item(content={"n": 1}))
    manager.store(item(content={"n": 1}))
    assert manager.query(ContextFilter()).total == 2


def test_a_key_names_one_request():
    manager = ContextManager(ContextSettings(), clock=FakeClock())
    ack = manager.store(item(id="a"), idempotency_key="k")
    with pytest.raises(Conflict) as raised:
        manager.delete("a", idempotency_key="k")
    assert raised.value.details["op"] == "store"
    with pytest.raises(Conflict):
        manager.store(item(id="b"), idempotency_key="k")
    assert manager.retrieve("a").item.version == ack.version


def test_a_failed_write_keeps_no_key():
    manager = ContextManager(ContextSettings(), clock=FakeClock())
    with pytest.raises(NotFound):
        manager.delete("missing", idempotency_key="k")
    manager.store(item(id="missing"))
    assert manager.delete("missing", idempotency_key="k").item_id == "missing"


def test_keys_expire_and_are_capped(tmp_path):
    clock = FakeClock()
    settings = ContextSettings(persistence="sqlite", path=str(tmp_path / "c.db"),
                               idempotency_ttl_s=60, idempotency_keys=3)
    manager = ContextManager(settings, clock=clock)
    for n in range(3):
        manager.store(item(id=f"i{n}"), idempotency_key=f"k{n}")
    clock.advance(61)
    # k0..k2 have expired: a write with k0 applies again, and the old keys are dropped.
    again = manager.store(item(id="i0"), idempotency_key="k0")
    assert again.version > 3
    keys = sqlite3.connect(settings.path).execute("SELECT key FROM idempotency").fetchall()
    assert keys == [("k0",)]
    for n in range(1, 5):
        manager.store(item(id=f"j{n}"), idempotency_key=f"n{n}")
    keys = {k for (k,) in sqlite3.connect(settings.path).execute("SELECT key FROM idempotency")}
    assert keys == {"n2", "n3", "n4"}, "at most idempotency_keys are kept, the newest"


def test_keys_are_validated():
    with pytest.raises(InvalidInput):
        StoreContext(item(), idempotency_key="")
    with pytest.raises(InvalidInput):
        DeleteContext("a", idempotency_key="x" * 200)
