"""The repository against a plain dict model: any sequence of stores, updates,
deletes, reads, queries, sweeps, reopenings and clock advances must give the
same answers, the same items and the same evictions."""
from __future__ import annotations

import copy
import json
import shutil
import tempfile
from typing import Any

from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from context.backends import MemoryBackend, SQLiteBackend
from context.repository import Repository
from context.settings import ContextSettings
from messages.context import CRITICAL, ContextFilter, ContextItem
from messages.errors import Conflict, NotFound, Overloaded

from .test_context_support import FakeClock

IDS = ["a", "b", "c", "d", "e", "f"]
TYPES = ["prompt", "features", "audio_parameters"]
SOURCES = ["asr", "gen"]
TASKS = [None, "t1", "t2"]
TAGS = ["x", "y", "z"]
KEYS = ["k", "n", "s"]
DEFAULT_TTL = 30
MAX_ITEMS = 4

scalars = st.one_of(st.integers(0, 2), st.sampled_from(["en", "de"]), st.booleans())
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=2), st.dictionaries(st.sampled_from(KEYS), inner, max_size=2)), max_leaves=4)
contents = st.one_of(st.dictionaries(st.sampled_from(KEYS), st.one_of(values, st.none()), max_size=3), scalars)
patches = st.recursive(
    st.one_of(scalars, st.none(), st.lists(scalars, max_size=2)),
    lambda inner: st.dictionaries(st.sampled_from(KEYS), inner, max_size=3), max_leaves=5)
tag_sets = st.frozensets(st.sampled_from(TAGS), max_size=2)


def model_merge(target: Any, patch: Any) -> Any:
    """RFC 7396 section 2, as written there."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = model_merge(result.get(key), value)
    return result


def path_value(content: Any, path: str) -> Any:
    for segment in path.split("."):
        if not isinstance(content, dict) or segment not in content:
            return KeyError
        content = content[segment]
    return content


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON text, so true is not 1."""
    return a is not KeyError and json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


stores = st.fixed_dictionaries({
    "item_id": st.sampled_from(IDS), "type_": st.sampled_from(TYPES), "content": contents,
    "source": st.sampled_from(SOURCES), "priority": st.sampled_from([1, 2, 5, 5, 8, 10]),
    "tags": tag_sets, "task_id": st.sampled_from(TASKS),
    "ttl_s": st.sampled_from([None, None, 3, 10, 60]), "sliding": st.sampled_from([None, True, False]),
})

# Each query uses at most two criteria, so that it usually finds something.
CRITERIA = {
    "types": st.frozensets(st.sampled_from(TYPES), min_size=1, max_size=2),
    "sources": st.sampled_from(SOURCES),
    "task_id": st.sampled_from(TASKS[1:]),
    "min_priority": st.sampled_from([3, 8]),
    "tags": st.frozensets(st.sampled_from(TAGS), min_size=1, max_size=2),
    "content": st.dictionaries(st.sampled_from(["k", "n.k", "s"]), scalars, min_size=1, max_size=1),
    "created_since": st.sampled_from([0, 5, 30]),  # seconds ago
    "updated_before": st.sampled_from([0, 5]),  # seconds ago
}


class RepositoryMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock(0.0)
        self.settings = ContextSettings(default_ttl_s=DEFAULT_TTL, max_items=MAX_ITEMS,
                                        compress_threshold_bytes=64)
        self.backend = self.open_backend()
        self.repo = Repository(self.backend, self.settings, self.clock)
        self.items: dict[str, dict[str, Any]] = {}  # the model: id -> fields
        self.tick = 0
        self.evictions = 0

    def open_backend(self):
        return MemoryBackend()

    # ---- the model's rules --------------------------------------------------------

    def live(self) -> dict[str, dict[str, Any]]:
        now = self.clock.now
        for item_id in [i for i, fields in self.items.items() if now >= fields["expires_at"]]:
            del self.items[item_id]
        return self.items

    def used(self, fields: dict[str, Any]) -> None:
        self.tick += 1
        fields["last_used"] = self.tick
        if fields["sliding_ttl"]:
            fields["expires_at"] = self.clock.now + fields["ttl_s"]

    def expected_item(self, item_id: str) -> ContextItem:
        fields = {k: v for k, v in self.items[item_id].items() if k != "last_used"}
        return ContextItem(id=item_id, **fields)

    def model_matches(self, f: ContextFilter, fields: dict[str, Any]) -> bool:
        return ((f.types is None or fields["type"] in f.types)
                and (f.sources is None or fields["source"] in f.sources)
                and (f.task_id is None or fields["task_id"] == f.task_id)
                and (f.min_priority is None or fields["priority"] >= f.min_priority)
                and (f.tags is None or (f.tags <= fields["tags"] if f.tags_mode == "all"
                                        else bool(f.tags & fields["tags"])))
                and (f.created_since is None or fields["created_at"] >= f.created_since)
                and (f.updated_before is None or fields["updated_at"] < f.updated_before)
                and all(same_json(path_value(fields["content"], p), v) for p, v in (f.content or {}).items()))

    # ---- rules ------------------------------------------------------------------

    @initialize(first=st.lists(stores, min_size=2, max_size=5))
    def fill(self, first):
        for arguments in first:
            self.store(**arguments)

    @rule(arguments=stores)
    def store_one(self, arguments):
        self.store(**arguments)

    def store(self, item_id, type_, content, source, priority, tags, task_id, ttl_s, sliding):
        live = self.live()
        existing = live.get(item_id)
        overloaded = False
        if existing is None and len(live) >= MAX_ITEMS:
            candidates = [i for i, fields in live.items() if fields["priority"] < CRITICAL]
            if candidates:
                victim = min(candidates, key=lambda i: (live[i]["priority"], live[i]["expires_at"],
                                                         live[i]["last_used"]))
                del live[victim]
                self.evictions += 1
            else:
                overloaded = True
        try:
            change = self.repo.store(ContextItem(type_, content, source, priority=priority, tags=tags,
                                                 task_id=task_id, id=item_id, ttl_s=ttl_s,
                                                 sliding_ttl=sliding))
        except Overloaded:
            assert overloaded
            return
        assert not overloaded
        now = self.clock.now
        ttl = ttl_s or DEFAULT_TTL
        live[item_id] = {"type": type_, "content": content, "source": source, "priority": priority,
                         "tags": tags, "task_id": task_id, "workflow_id": None, "ttl_s": ttl,
                         "sliding_ttl": bool(sliding), "created_at": existing["created_at"] if existing else now,
                         "updated_at": now, "expires_at": now + ttl, "version": change.record.version}
        self.tick += 1
        live[item_id]["last_used"] = self.tick

    @rule(item_id=st.sampled_from(IDS), patch=patches, priority=st.sampled_from([None, 3, 10]),
          tags=st.one_of(st.none(), tag_sets), ttl_s=st.sampled_from(["keep", None, 3]),
          version_choice=st.sampled_from(["none", "current", "stale"]))
    def update(self, item_id, patch, priority, tags, ttl_s, version_choice):
        changes: dict[str, Any] = {"content": patch}
        if priority is not None:
            changes["priority"] = priority
        if tags is not None:
            changes["tags"] = tags
        if ttl_s != "keep":
            changes["ttl_s"] = ttl_s
        fields = self.live().get(item_id)
        expected = None
        if fields is not None and version_choice != "none":
            expected = fields["version"] - (version_choice == "stale")
        try:
            change = self.repo.update(item_id, changes, expected)
        except NotFound:
            assert fields is None
            return
        except Conflict as conflict:
            assert version_choice == "stale" and conflict.details["current_version"] == fields["version"]
            return
        assert fields is not None and version_choice != "stale"
        now = self.clock.now
        fields["content"] = model_merge(fields["content"], patch)
        fields.update({k: v for k, v in changes.items() if k in ("priority", "tags")})
        if ttl_s != "keep":
            fields["ttl_s"] = ttl_s or DEFAULT_TTL
        fields.update(updated_at=now, expires_at=now + fields["ttl_s"], version=change.record.version)
        self.tick += 1
        fields["last_used"] = self.tick

    @rule(item_id=st.sampled_from(IDS))
    def delete(self, item_id):
        present = item_id in self.live()
        try:
            self.repo.delete(item_id)
        except NotFound:
            assert not present
            return
        assert present
        del self.items[item_id]

    @rule(item_id=st.sampled_from(IDS))
    def retrieve(self, item_id):
        fields = self.live().get(item_id)
        try:
            got = self.repo.retrieve(item_id)
        except NotFound:
            assert fields is None
            return
        assert fields is not None
        self.used(fields)
        assert got == self.expected_item(item_id)

    @rule(criteria=st.sets(st.sampled_from(sorted(CRITERIA)), max_size=2), data=st.data(),
          tags_mode=st.sampled_from(["any", "all"]), order=st.sampled_from(["newest", "oldest", "priority"]),
          limit=st.integers(1, 5), offset=st.sampled_from([0, 0, 1, 3]))
    def query(self, criteria, data, tags_mode, order, limit, offset):
        chosen = {name: data.draw(CRITERIA[name], label=name) for name in sorted(criteria)}
        for name in ("created_since", "updated_before"):
            if name in chosen:
                chosen[name] = max(0.0, self.clock.now - chosen[name])
        f = ContextFilter(**chosen, tags_mode=tags_mode, order=order, limit=limit, offset=offset)
        live = self.live()
        matched = [i for i, fields in live.items() if self.model_matches(f, fields)]
        key = {"newest": lambda i: -live[i]["version"], "oldest": lambda i: live[i]["version"],
               "priority": lambda i: (-live[i]["priority"], -live[i]["version"])}[order]
        page = sorted(matched, key=key)[offset:offset + limit]
        items, total = self.repo.query(f)
        for item_id in page:
            self.used(live[item_id])
        assert total == len(matched)
        assert items == [self.expected_item(i) for i in page]

    @rule(seconds=st.sampled_from([1, 2, 5, 15]))
    def advance(self, seconds):
        self.clock.advance(seconds)

    @rule(max_items=st.sampled_from([1, 2, 100]))
    def sweep(self, max_items):
        assert self.repo.sweep(max_items) <= max_items
        if max_items == 100:
            assert self.repo.stats().items == len(self.live())

    @rule()
    def reopen(self):
        """A new repository on the same storage, as after a crash."""
        self.repo = Repository(self.reopen_backend(), self.settings, self.clock)
        live = self.live()
        for rank, item_id in enumerate(sorted(live, key=lambda i: live[i]["version"]), start=1):
            live[item_id]["last_used"] = rank
        self.tick = len(live)
        self.evictions = 0

    def reopen_backend(self):
        return self.backend

    @invariant()
    def same_evictions_and_no_fewer_stored(self):
        stats = self.repo.stats()
        assert stats.evictions == self.evictions
        assert stats.items >= len(self.live())


class SQLiteRepositoryMachine(RepositoryMachine):
    """The same model, with every reopening reading SQLite back from disk."""

    def open_backend(self):
        self.directory = tempfile.mkdtemp(prefix="grym-context-")
        return SQLiteBackend(f"{self.directory}/context.db")

    def reopen_backend(self):
        return SQLiteBackend(f"{self.directory}/context.db")  # the old connection is never closed

    def teardown(self):
        shutil.rmtree(self.directory, ignore_errors=True)


TestRepositoryAgainstModel = RepositoryMachine.TestCase
TestRepositoryAgainstModel.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])

TestSQLiteRepositoryAgainstModel = SQLiteRepositoryMachine.TestCase
TestSQLiteRepositoryAgainstModel.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
