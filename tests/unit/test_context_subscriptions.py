"""Subscriptions: matching changes delivered in order, and catching up from the log."""
from __future__ import annotations

import pickle

import pytest

from context import ContextManager, ContextSettings
from messages.context import ChangeKind, ContextFilter
from messages.errors import NotFound

from .test_context_support import FakeClock, item


def manager(clock=None, **settings) -> ContextManager:
    return ContextManager(ContextSettings(**settings), clock=clock or FakeClock())


def kinds(deliveries) -> list[tuple[str, ChangeKind]]:
    return [(change.item.id, change.kind) for _, change in deliveries]


def test_every_kind_of_matching_change_is_delivered_in_order():
    clock = FakeClock()
    m = manager(clock, max_items=2)
    sub = m.subscribe(ContextFilter(types="prompt")).subscription_id
    m.store(item(id="a", priority="low", ttl_s=5))
    m.store(item("features", id="other"))
    m.update("a", {"content": {"more": 1}})
    m.store(item(id="b", priority="high", ttl_s=100))  # evicts a, the lowest priority
    m.store(item(id="c", ttl_s=5))  # evicts "other", which nobody watches
    m.delete("c")
    m.store(item(id="d", ttl_s=5))
    clock.advance(10)
    m.sweep()
    deliveries = m.take_changes()
    assert kinds(deliveries) == [("a", ChangeKind.STORED), ("a", ChangeKind.UPDATED),
                                 ("a", ChangeKind.EVICTED), ("b", ChangeKind.STORED),
                                 ("c", ChangeKind.STORED), ("c", ChangeKind.DELETED),
                                 ("d", ChangeKind.STORED), ("d", ChangeKind.EXPIRED)]
    seqs = [change.seq for _, change in deliveries]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert {sid for sid, _ in deliveries} == {sub}
    assert all(change.subscription_id == sub for _, change in deliveries)
    assert m.take_changes() == []


def test_each_subscription_gets_only_what_its_filter_matches():
    m = manager()
    english = m.subscribe(ContextFilter(content={"language": "en"})).subscription_id
    asr = m.subscribe(ContextFilter(sources="asr")).subscription_id
    m.store(item(id="x", content={"language": "en"}, source="asr"))
    m.store(item(id="y", content={"language": "de"}, source="asr"))
    m.store(item(id="z", content={"language": "fr"}, source="gen"))
    got = [(sid, change.item.id) for sid, change in m.take_changes()]
    assert got == [(english, "x"), (asr, "x"), (asr, "y")]


def test_an_update_that_moves_an_item_out_of_a_filter_is_delivered():
    m = manager()
    sub = m.subscribe(ContextFilter(min_priority="high")).subscription_id
    m.store(item(id="k", priority="high"))
    m.update("k", {"priority": "low"})
    m.update("k", {"content": "still low"})
    deliveries = m.take_changes()
    assert kinds(deliveries) == [("k", ChangeKind.STORED), ("k", ChangeKind.UPDATED)]
    assert deliveries[-1][1].item.priority == 2 and deliveries[0][0] == sub


def test_a_subscriber_catches_up_from_a_sequence_number():
    m = manager()
    m.store(item(id="a"))
    seen = m.store(item(id="b")).seq
    m.store(item("features", id="f"))
    m.update("a", {"content": 2})
    reply = m.subscribe(ContextFilter(types="prompt"), since_seq=seen)
    assert [(c.item.id, c.kind, c.subscription_id) for c in reply.missed] == [
        ("a", ChangeKind.UPDATED, reply.subscription_id)]
    assert reply.gap is False and reply.seq == 4
    assert m.subscribe(ContextFilter(), since_seq=reply.seq).missed == ()


def test_a_gap_is_reported_when_the_log_no_longer_reaches_back():
    m = manager(change_log_size=3)
    for n in range(6):
        m.store(item(id=f"i{n}"))
    reply = m.subscribe(ContextFilter(), since_seq=1)
    assert reply.gap is True and [c.seq for c in reply.missed] == [4, 5, 6]
    assert m.subscribe(ContextFilter(), since_seq=3).gap is False
    assert m.subscribe(ContextFilter(), since_seq=99).gap is True  # ahead: the store restarted


def test_after_a_restart_older_sequence_numbers_are_a_gap(tmp_path):
    settings = ContextSettings(persistence="sqlite", path=str(tmp_path / "c.db"))
    first = ContextManager(settings, clock=FakeClock())
    for n in range(3):
        first.store(item(id=f"i{n}"))
    second = ContextManager(settings, clock=FakeClock())
    assert second.subscribe(ContextFilter(), since_seq=1).gap is True
    assert second.subscribe(ContextFilter(), since_seq=3).gap is False


def test_unsubscribe_stops_deliveries():
    m = manager()
    sub = m.subscribe(ContextFilter()).subscription_id
    assert m.unsubscribe(sub).subscription_id == sub
    m.store(item())
    assert m.take_changes() == []
    with pytest.raises(NotFound):
        m.unsubscribe(sub)


def test_a_change_keeps_the_state_it_was_made_with():
    clock = FakeClock()
    m = manager(clock, sliding_ttl=True, default_ttl_s=10)
    m.subscribe(ContextFilter())
    m.store(item(id="k"))
    clock.advance(5)
    m.retrieve("k")  # slides the live item's expiry
    (_, stored), = m.take_changes()
    assert stored.item.expires_at == 1010.0
    assert pickle.loads(pickle.dumps(stored)) == stored
