"""Context items, filters and messages: normalised and validated when built."""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from context.settings import ContextSettings
from messages.context import (
    ChangeKind, ContextAck, ContextChange, ContextFilter, ContextItem, ContextType,
    GetContextForModel, Order, QueryContext, StoreContext, SubscribeContext, UpdateContext,
)
from messages.errors import ConfigError, InvalidInput


def invalid_field(build) -> str:
    with pytest.raises(InvalidInput) as caught:
        build()
    return caught.value.details["field"]


@pytest.mark.parametrize("name, value", [("low", 2), ("normal", 5), ("high", 8),
                                         ("critical", 10), ("HIGH", 8), (7, 7)])
def test_priority_names_map_onto_numbers(name, value):
    assert ContextItem("prompt", "x", "svc", priority=name).priority == value


@pytest.mark.parametrize("priority", [0, 11, "urgent", True, 2.5, None])
def test_bad_priority_names_the_field(priority):
    assert invalid_field(lambda: ContextItem("prompt", "x", "svc", priority=priority)) == "priority"


def test_tags_become_a_frozenset_and_a_bare_string_is_one_tag():
    assert ContextItem("prompt", "x", "svc", tags=["a", "b", "a"]).tags == frozenset({"a", "b"})
    assert ContextItem("prompt", "x", "svc", tags="solo").tags == frozenset({"solo"})
    assert invalid_field(lambda: ContextItem("prompt", "x", "svc", tags=["ok", 3])) == "tags"
    assert invalid_field(lambda: ContextItem("prompt", "x", "svc", tags={"a": 1})) == "tags"


def test_numpy_content_becomes_plain_json():
    content = {"rate": np.int64(16000), "gain": np.float32(0.5), "on": np.bool_(True),
               "window": np.arange(3), "pair": (1, 2)}
    item = ContextItem("features", content, "svc")
    assert item.content == {"rate": 16000, "gain": 0.5, "on": True, "window": [0, 1, 2], "pair": [1, 2]}
    assert type(item.content["rate"]) is int and type(item.content["on"]) is bool


@pytest.mark.parametrize("content", [{1, 2}, {"a": object()}, {1: "non-string key"},
                                     {"nan": math.nan}, [math.inf], b"bytes"])
def test_content_that_is_not_json_is_refused_naming_content(content):
    assert invalid_field(lambda: ContextItem("features", content, "svc")) == "content"


def test_content_nested_too_deep_is_refused():
    deep: list = []
    for _ in range(100):
        deep = [deep]
    assert invalid_field(lambda: ContextItem("features", deep, "svc")) == "content"


@pytest.mark.parametrize("fields, name", [
    ({"type": ""}, "type"), ({"source": None}, "source"), ({"task_id": ""}, "task_id"),
    ({"ttl_s": 0}, "ttl_s"), ({"ttl_s": -1}, "ttl_s"), ({"sliding_ttl": "yes"}, "sliding_ttl"),
    ({"version": -1}, "version"), ({"created_at": math.nan}, "created_at"), ({"id": 5}, "id"),
])
def test_malformed_items_name_the_field(fields, name):
    base = {"type": "prompt", "content": "x", "source": "svc"}
    assert invalid_field(lambda: ContextItem(**{**base, **fields})) == name


def test_any_type_string_is_allowed_and_enum_types_become_strings():
    assert ContextItem("my_own_type", 1, "svc").type == "my_own_type"
    assert ContextItem(ContextType.AUDIO_PARAMETERS, {}, "svc").type == "audio_parameters"


def test_items_and_messages_survive_pickling_and_revalidate():
    item = ContextItem("audio_parameters", {"sample_rate": 16000}, "svc", priority="high",
                       tags={"x"}, task_id="t1")
    for message in (item, StoreContext(item), QueryContext(ContextFilter(types="prompt")),
                    UpdateContext("id1", {"content": {"a": None}}, expected_version=3),
                    ContextChange(4, ChangeKind.STORED, item, "sub"), ContextAck("id1", 3, 4)):
        copy = pickle.loads(pickle.dumps(message))
        assert copy == message
        copy.validate()


def test_a_message_that_arrives_malformed_fails_validation():
    item = ContextItem("prompt", "x", "svc")
    object.__setattr__(item, "content", {"bad": {1, 2}})  # as if unpickled from a bad sender
    assert invalid_field(item.validate) == "content"
    assert invalid_field(lambda: StoreContext(item)) == "content"
    assert invalid_field(lambda: StoreContext({"type": "prompt"})) == "item"


def test_filter_normalises_and_validates():
    f = ContextFilter(types=["prompt", ContextType.FEATURES], min_priority="high", order="priority",
                      content={"audio.rate": np.int64(8000)})
    assert f.types == frozenset({"prompt", "features"})
    assert f.min_priority == 8 and f.order is Order.PRIORITY and f.content == {"audio.rate": 8000}
    for fields, name in [({"tags_mode": "some"}, "tags_mode"), ({"order": "random"}, "order"),
                         ({"limit": 0}, "limit"), ({"limit": 10**6}, "limit"), ({"offset": -1}, "offset"),
                         ({"types": []}, "types"), ({"content": {"a..b": 1}}, "content"),
                         ({"created_since": -5}, "created_since"), ({"min_priority": 0}, "min_priority")]:
        assert invalid_field(lambda: ContextFilter(**fields)) == name


def test_update_changes_are_checked_and_normalised():
    message = UpdateContext("id1", {"priority": "critical", "tags": ["a"], "content": {"x": np.int8(1)}})
    assert message.changes == {"priority": 10, "tags": frozenset({"a"}), "content": {"x": 1}}
    assert invalid_field(lambda: UpdateContext("id1", {"version": 3})) == "changes.version"
    assert invalid_field(lambda: UpdateContext("id1", {})) == "changes"
    assert invalid_field(lambda: UpdateContext("id1", {"content": {1, 2}})) == "changes.content"
    assert invalid_field(lambda: UpdateContext("id1", {"ttl_s": 5}, expected_version=-1)) == "expected_version"


def test_other_requests_validate_their_fields():
    assert GetContextForModel("wav2vec2", priority="low").priority == 2
    assert invalid_field(lambda: GetContextForModel("")) == "model_type"
    assert invalid_field(lambda: GetContextForModel("m", filter={"types": "x"})) == "filter"
    assert invalid_field(lambda: SubscribeContext(ContextFilter(), since_seq=-1)) == "since_seq"


def test_item_to_dict_is_json_friendly():
    data = ContextItem("prompt", {"a": [1]}, "svc", tags={"b", "a"}).to_dict()
    assert data["tags"] == ["a", "b"] and data["content"] == {"a": [1]} and data["priority"] == 5


def test_settings_defaults_and_sizes():
    settings = ContextSettings.from_config({"max_bytes": "1MiB", "compress_threshold_bytes": "4KB",
                                            "synchronous": "full", "persistence": "sqlite",
                                            "path": "/tmp/x.db"})
    assert settings.max_bytes == 2**20 and settings.compress_threshold_bytes == 4000
    assert settings.synchronous == "FULL" and ContextSettings().persistence == "memory"


@pytest.mark.parametrize("data, key", [
    ({"max_itemz": 5}, "context.max_itemz"), ({"max_items": 0}, "context.max_items"),
    ({"default_ttl_s": -1}, "context.default_ttl_s"), ({"persistence": "redis"}, "context.persistence"),
    ({"persistence": "sqlite"}, "context.path"), ({"synchronous": "OFF"}, "context.synchronous"),
    ({"max_bytes": "lots"}, "context.max_bytes"), ({"sliding_ttl": "yes"}, "context.sliding_ttl"),
    ({"sweep_batch": 1.5}, "context.sweep_batch"),
])
def test_bad_settings_name_the_key(data, key):
    with pytest.raises(ConfigError) as caught:
        ContextSettings.from_config(data)
    assert caught.value.details["key"] == key
