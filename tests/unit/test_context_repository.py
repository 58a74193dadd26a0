"""The repository: storing, querying, lifetimes, limits, conflicts, atomic writes."""
from __future__ import annotations

import pytest

from context.backends import Batch, MemoryBackend
from messages.context import ChangeKind, ContextFilter, Order
from messages.errors import Conflict, ExecutionError, InvalidInput, NotFound, Overloaded

from .test_context_support import FakeClock, item, repository

# ---- store, retrieve, delete -------------------------------------------------


def test_store_assigns_id_timestamps_ttl_and_version():
    clock = FakeClock(500.0)
    repo, changes = repository(clock, default_ttl_s=60)
    change = repo.store(item(content={"a": 1}, created_at=1.0, version=99))
    stored = repo.retrieve(change.record.id)
    assert stored.id and stored.content == {"a": 1}
    assert (stored.created_at, stored.updated_at, stored.expires_at) == (500.0, 500.0, 560.0)
    assert stored.ttl_s == 60 and stored.sliding_ttl is False
    assert stored.version == change.seq == 1 and [c.kind for c in changes] == [ChangeKind.STORED]


def test_storing_an_existing_id_replaces_it_and_keeps_created_at():
    clock = FakeClock()
    repo, changes = repository(clock)
    repo.store(item(id="k", content=1, tags={"old"}))
    clock.advance(5)
    repo.store(item(id="k", content=2))
    stored = repo.retrieve("k")
    assert stored.content == 2 and stored.tags == frozenset() and stored.version == 2
    assert stored.created_at == clock.now - 5 and stored.updated_at == clock.now
    assert [c.kind for c in changes] == [ChangeKind.STORED, ChangeKind.UPDATED]
    assert repo.query(ContextFilter(tags="old")) == ([], 0)


def test_unknown_ids_are_not_found():
    repo, _ = repository()
    for call in (lambda: repo.retrieve("nope"), lambda: repo.delete("nope"),
                 lambda: repo.update("nope", {"content": 1})):
        with pytest.raises(NotFound) as caught:
            call()
        assert caught.value.details == {"item_id": "nope"}


def test_delete_removes_and_reports_the_last_state():
    repo, changes = repository()
    repo.store(item(id="k", content={"v": 1}))
    change = repo.delete("k")
    assert change.kind is ChangeKind.DELETED and change.item.content == {"v": 1}
    with pytest.raises(NotFound):
        repo.retrieve("k")
    assert repo.stats().items == 0 and repo.stats().bytes == 0


def test_returned_items_are_copies():
    repo, _ = repository()
    repo.store(item(id="k", content={"list": [1]}))
    repo.retrieve("k").content["list"].append(2)
    assert repo.retrieve("k").content == {"list": [1]}


def test_large_content_is_compressed_and_restored():
    repo, _ = repository(compress_threshold_bytes=1024)
    big = {"text": "abc " * 2000}
    repo.store(item(id="big", content=big))
    repo.store(item(id="small", content={"text": "abc"}))
    assert repo._records["big"].compressed and not repo._records["small"].compressed
    assert repo._records["big"].size < 1024
    assert repo.retrieve("big").content == big
    assert repo.query(ContextFilter(content={"text": big["text"]}))[1] == 1

# ---- queries -----------------------------------------------------------------


def stored_ids(repo, **filter_fields) -> list[str]:
    items, _ = repo.query(ContextFilter(**filter_fields))
    return [i.id for i in items]


@pytest.fixture
def populated():
    clock = FakeClock(100.0)
    repo, _ = repository(clock)
    rows = [("a", "prompt", "gen", 5, {"x"}, "t1", "w1", {"language": "en", "audio": {"rate": 8000}}),
            ("b", "prompt", "asr", 8, {"x", "y"}, "t1", "w1", {"language": "de"}),
            ("c", "features", "asr", 2, set(), "t2", "w1", {"language": "en", "list": [10, 20]}),
            ("d", "transcription", "asr", 10, {"y"}, None, None, {"language": "en", "flag": True})]
    for id_, type_, source, priority, tags, task, workflow, content in rows:
        repo.store(item(type_, content, source, id=id_, priority=priority, tags=tags,
                        task_id=task, workflow_id=workflow))
        clock.advance(10)
    return repo, clock


@pytest.mark.parametrize("fields, expected", [
    ({}, ["d", "c", "b", "a"]),
    ({"types": "prompt"}, ["b", "a"]),
    ({"types": ["prompt", "features"]}, ["c", "b", "a"]),
    ({"sources": "asr"}, ["d", "c", "b"]),
    ({"task_id": "t1"}, ["b", "a"]),
    ({"workflow_id": "w1", "sources": "asr"}, ["c", "b"]),
    ({"min_priority": "high"}, ["d", "b"]),
    ({"tags": ["x", "y"]}, ["d", "b", "a"]),
    ({"tags": ["x", "y"], "tags_mode": "all"}, ["b"]),
    ({"tags": "nothing"}, []),
    ({"content": {"language": "en"}}, ["d", "c", "a"]),
    ({"content": {"audio.rate": 8000}}, ["a"]),
    ({"content": {"list.1": 20}}, ["c"]),
    ({"content": {"flag": 1}}, []),  # JSON true is not 1
    ({"content": {"language": "en"}, "types": "prompt"}, ["a"]),
    ({"created_since": 110, "created_before": 130}, ["c", "b"]),
    ({"updated_before": 110}, ["a"]),
    ({"order": "oldest"}, ["a", "b", "c", "d"]),
    ({"order": "priority"}, ["d", "b", "a", "c"]),
    ({"order": "oldest", "offset": 1, "limit": 2}, ["b", "c"]),
])
def test_query_criteria_and_order(populated, fields, expected):
    repo, _ = populated
    assert stored_ids(repo, **fields) == expected


def test_query_total_counts_every_match_before_paging(populated):
    repo, _ = populated
    items, total = repo.query(ContextFilter(sources="asr", limit=1, offset=1))
    assert [i.id for i in items] == ["c"] and total == 3


def test_newest_means_most_recently_written(populated):
    repo, _ = populated
    repo.update("a", {"priority": 6})
    assert stored_ids(repo, types="prompt", order=Order.NEWEST) == ["a", "b"]


def test_an_indexed_query_examines_only_what_it_may_return():
    repo, _ = repository()
    for n in range(20_000):
        repo.store(item("features" if n % 2 else "prompt", {"n": n}, source=f"svc{n % 7}",
                        id=f"i{n}", task_id=f"task{n % 1000}", tags={f"tag{n % 500}"}))
    before = repo.candidates_examined
    items, total = repo.query(ContextFilter(task_id="task7"))
    assert total == 20 and len(items) == 20
    assert repo.candidates_examined - before == 20
    # With several criteria the most selective index drives the query.
    before = repo.candidates_examined
    _, total = repo.query(ContextFilter(types="prompt", sources="svc3", tags=["tag4", "tag6"],
                                        tags_mode="all"))
    assert repo.candidates_examined - before <= 40
    # Without an indexed criterion every item is a candidate: that is the price.
    before = repo.candidates_examined
    repo.query(ContextFilter(min_priority=9))
    assert repo.candidates_examined - before == 20_000

# ---- lifetimes -----------------------------------------------------------------


def test_expired_items_are_never_returned_and_are_removed_when_touched():
    clock = FakeClock()
    repo, changes = repository(clock, default_ttl_s=10)
    repo.store(item(id="short", ttl_s=5))
    repo.store(item(id="default"))
    clock.advance(5)
    assert stored_ids(repo) == ["default"]
    assert repo.stats().items == 1 and repo.stats().expirations == 1
    clock.advance(5)
    with pytest.raises(NotFound):
        repo.retrieve("default")
    assert repo.stats().items == 0 and repo.stats().expirations == 2
    assert [c.kind for c in changes][-2:] == [ChangeKind.EXPIRED, ChangeKind.EXPIRED]


def test_an_update_restarts_the_ttl_and_a_plain_read_does_not():
    clock = FakeClock()
    repo, _ = repository(clock, default_ttl_s=10)
    repo.store(item(id="k"))
    clock.advance(8)
    repo.retrieve("k")
    repo.query(ContextFilter())
    repo.update("k", {"content": {"more": 1}})
    clock.advance(8)
    assert repo.retrieve("k").expires_at == clock.now + 2
    clock.advance(2)
    with pytest.raises(NotFound):
        repo.retrieve("k")


@pytest.mark.parametrize("configured, per_item, slides", [
    (False, None, False), (False, True, True), (True, None, True), (True, False, False)])
def test_a_read_restarts_a_sliding_ttl(configured, per_item, slides):
    clock = FakeClock()
    repo, _ = repository(clock, default_ttl_s=10, sliding_ttl=configured)
    repo.store(item(id="k", sliding_ttl=per_item))
    clock.advance(8)
    assert repo.retrieve("k").expires_at == (clock.now + 10 if slides else clock.now + 2)
    clock.advance(8)
    assert stored_ids(repo) == (["k"] if slides else [])


def test_a_query_slides_only_the_items_it_returns():
    clock = FakeClock()
    repo, _ = repository(clock, default_ttl_s=10, sliding_ttl=True)
    repo.store(item(id="shown", content={"n": 1}))
    repo.store(item(id="not_shown", content={"n": 2}))
    clock.advance(8)
    assert stored_ids(repo, content={"n": 1}) == ["shown"]
    clock.advance(8)
    assert stored_ids(repo) == ["shown"]


def test_sweep_is_bounded_and_takes_the_soonest_expired_first():
    clock = FakeClock()
    repo, changes = repository(clock)
    for n in range(10):
        repo.store(item(id=f"i{n}", ttl_s=10 + n))
    repo.store(item(id="lasting", ttl_s=1000))
    clock.advance(100)
    assert repo.sweep(3) == 3
    assert [c.record.id for c in changes if c.kind is ChangeKind.EXPIRED] == ["i0", "i1", "i2"]
    assert repo.stats().items == 8
    assert repo.sweep(100) == 7 and repo.sweep(100) == 0
    assert repo.stats().items == 1 and repo.stats().expirations == 10

def test_an_id_stored_again_with_the_same_expiry_expires_once():
    clock = FakeClock()
    repo, changes = repository(clock)
    repo.store(item(id="a", ttl_s=5))
    repo.delete("a")
    repo.store(item(id="a", ttl_s=5))  # same clock, same expiry as the deleted one
    clock.advance(10)
    assert repo.sweep(10) == 1
    assert repo.stats().expirations == 1 and repo.stats().items == 0


# ---- limits and eviction -------------------------------------------------------


def evicted(changes) -> list[str]:
    return [c.record.id for c in changes if c.kind is ChangeKind.EVICTED]


def test_eviction_takes_lowest_priority_first():
    repo, changes = repository(max_items=3)
    repo.store(item(id="normal", priority="normal"))
    repo.store(item(id="low", priority="low"))
    repo.store(item(id="high", priority="high"))
    repo.store(item(id="new", priority="normal"))
    assert evicted(changes) == ["low"]
    assert sorted(stored_ids(repo)) == ["high", "new", "normal"]
    assert repo.stats().evictions == 1 and repo.stats().items == 3


def test_eviction_breaks_ties_by_soonest_expiry_then_least_recent_use():
    repo, changes = repository(max_items=3)
    repo.store(item(id="long", ttl_s=100))
    repo.store(item(id="short", ttl_s=50))
    repo.store(item(id="other_long", ttl_s=100))
    repo.store(item(id="n1", ttl_s=100))
    assert evicted(changes) == ["short"]
    repo.retrieve("long")  # now other_long is the least recently used
    repo.store(item(id="n2", ttl_s=100))
    assert evicted(changes) == ["short", "other_long"]


def test_expired_items_go_before_any_live_item_is_evicted():
    clock = FakeClock()
    repo, changes = repository(clock, max_items=2)
    repo.store(item(id="low", priority="low", ttl_s=1000))
    repo.store(item(id="stale", priority="high", ttl_s=5))
    clock.advance(10)
    repo.store(item(id="new"))
    assert evicted(changes) == [] and sorted(stored_ids(repo)) == ["low", "new"]


def test_byte_limit_evicts_as_many_as_needed():
    repo, changes = repository(max_bytes=3000, compress_threshold_bytes=10**6)
    for n in range(5):
        repo.store(item(id=f"i{n}", content="x" * 500, priority=1 + n))
    repo.store(item(id="big", content="y" * 1800))
    assert evicted(changes) == ["i0", "i1", "i2"]
    assert repo.stats().bytes <= 3000


def test_critical_items_are_never_evicted_and_a_store_is_refused_when_only_they_are_left():
    repo, changes = repository(max_items=2)
    repo.store(item(id="c1", priority="critical"))
    repo.store(item(id="c2", priority="critical"))
    before = (repo.stats(), len(changes), repo.seq)
    with pytest.raises(Overloaded) as caught:
        repo.store(item(id="new", priority="critical"))
    assert "critical" in caught.value.message and caught.value.details["critical_items"] == 2
    assert (repo.stats(), len(changes), repo.seq) == before
    assert sorted(stored_ids(repo)) == ["c1", "c2"]
    repo.store(item(id="c1", content="replacing a critical item needs no room"))


def test_an_item_larger_than_the_byte_limit_is_refused():
    repo, _ = repository(max_bytes=1000, compress_threshold_bytes=10**6)
    repo.store(item(id="keep", content="x"))
    with pytest.raises(Overloaded):
        repo.store(item(id="huge", content="x" * 2000))
    assert stored_ids(repo) == ["keep"]


def test_the_item_being_updated_is_never_its_own_victim():
    repo, changes = repository(max_bytes=2000, compress_threshold_bytes=10**6)
    repo.store(item(id="grow", content="x", priority="low"))
    repo.store(item(id="other", content="x" * 500, priority="high"))
    repo.update("grow", {"content": "x" * 1600})
    assert evicted(changes) == ["other"] and stored_ids(repo) == ["grow"]

# ---- updates and conflicts -----------------------------------------------------


def test_update_merges_fields_and_content_as_a_merge_patch():
    clock = FakeClock()
    repo, changes = repository(clock)
    repo.store(item("generation_parameters", {"temperature": 0.7, "style": {"mood": "calm", "tempo": 90},
                                               "voices": [1, 2]}, id="k", tags={"a"}, priority="low"))
    clock.advance(3)
    change = repo.update("k", {"content": {"style": {"tempo": None, "key": "C"}, "voices": [3]},
                               "priority": "high"})
    stored = repo.retrieve("k")
    assert stored.content == {"temperature": 0.7, "style": {"mood": "calm", "key": "C"}, "voices": [3]}
    assert stored.priority == 8 and stored.tags == frozenset({"a"})
    assert stored.version == change.seq == 2 and stored.updated_at == clock.now
    assert change.kind is ChangeKind.UPDATED and change.previous.priority == 2


def test_successive_updates_without_a_version_each_win_field_by_field():
    repo, _ = repository()
    repo.store(item(id="k", content={"a": 1, "b": 1}))
    repo.update("k", {"content": {"a": 2}})
    repo.update("k", {"content": {"b": 3}, "source": "other"})
    stored = repo.retrieve("k")
    assert stored.content == {"a": 2, "b": 3} and stored.source == "other"


def test_a_stale_expected_version_is_a_conflict_carrying_the_current_item():
    repo, _ = repository()
    v1 = repo.store(item(id="k", content={"a": 1})).seq
    v2 = repo.update("k", {"content": {"a": 2}}, expected_version=v1).seq
    with pytest.raises(Conflict) as caught:
        repo.update("k", {"content": {"a": 3}}, expected_version=v1)
    details = caught.value.details
    assert details["current_version"] == v2 and details["expected_version"] == v1
    assert details["current"]["content"] == {"a": 2} and details["current"]["version"] == v2
    assert repo.retrieve("k").content == {"a": 2}


def test_versions_come_from_one_increasing_sequence():
    clock = FakeClock()
    repo, changes = repository(clock)
    repo.store(item(id="a"))
    repo.store(item(id="b", ttl_s=1))
    clock.advance(2)
    repo.sweep(10)
    repo.update("a", {"content": 2})
    assert [c.seq for c in changes] == [1, 2, 3, 4] and repo.retrieve("a").version == 4


@pytest.mark.parametrize("changes, name", [
    ({"priority": 42}, "changes.priority"), ({"ttl_s": -3}, "ttl_s"), ({"type": ""}, "type"),
    ({"created_at": 5}, "changes.created_at"), ({"content": {1, 2}}, "changes.content")])
def test_an_invalid_update_names_the_field_and_changes_nothing(changes, name):
    repo, reported = repository()
    repo.store(item(id="k", content={"a": 1}))
    with pytest.raises(InvalidInput) as caught:
        repo.update("k", changes)
    assert caught.value.details["field"] == name
    assert repo.retrieve("k").content == {"a": 1} and len(reported) == 1


def test_update_ttl_and_sliding_settings():
    clock = FakeClock()
    repo, _ = repository(clock, default_ttl_s=10)
    repo.store(item(id="k", ttl_s=100))
    repo.update("k", {"ttl_s": 30, "sliding_ttl": True})
    stored = repo.retrieve("k")
    assert (stored.ttl_s, stored.sliding_ttl, stored.expires_at) == (30, True, clock.now + 30)
    repo.update("k", {"ttl_s": None})  # back to the default
    assert repo.retrieve("k").ttl_s == 10

# ---- nothing half-written --------------------------------------------------------


class FailingBackend(MemoryBackend):
    fail = False

    def apply(self, batch: Batch) -> None:
        if self.fail:
            raise ExecutionError("disk full")
        super().apply(batch)


def test_a_failed_write_leaves_memory_and_storage_as_they_were():
    backend = FailingBackend()
    repo, changes = repository(backend=backend, max_items=2)
    repo.store(item(id="a", priority="low"))
    repo.store(item(id="b"))
    backend.fail = True
    for write in (lambda: repo.store(item(id="c")), lambda: repo.update("a", {"content": 5}),
                  lambda: repo.delete("b")):
        with pytest.raises(ExecutionError):
            write()
    assert len(changes) == 2 and repo.stats().items == 2 and repo.stats().evictions == 0
    assert repo.retrieve("a").content == {"text": "hi"} and backend.load().seq == 2
    backend.fail = False  # the eviction order survived the failed attempt
    repo.store(item(id="c"))
    assert evicted(changes) == ["a"]
