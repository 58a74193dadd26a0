"""The manager's replies, and context shaped for each kind of model by its adapter."""
from __future__ import annotations

import pytest

import context.adapters as adapters
from context import ContextManager, ContextSettings, GenerationAdapter, Wav2Vec2Adapter
from messages.context import (
    ContextAck, ContextFilter, ContextItemReply, ContextItems, ContextStats, ModelContext,
)
from messages.errors import ConfigError, InvalidInput

from .test_context_support import FakeClock, item


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def m(clock) -> ContextManager:
    return ContextManager(ContextSettings(), clock=clock)


def test_requests_answer_with_their_reply_messages(m):
    ack = m.store(item(content={"a": 1}))
    assert isinstance(ack, ContextAck) and ack.version == ack.seq == 1
    reply = m.retrieve(ack.item_id)
    assert isinstance(reply, ContextItemReply) and reply.item.content == {"a": 1}
    page = m.query(ContextFilter())
    assert isinstance(page, ContextItems) and page.total == 1 and isinstance(page.items, tuple)
    assert [i.id for i in page.items] == [ack.item_id]
    assert m.update(ack.item_id, {"content": {"b": 2}}) == ContextAck(ack.item_id, 2, 2)
    assert m.delete(ack.item_id) == ContextAck(ack.item_id, 2, 3)
    assert m.stats() == ContextStats(items=0, bytes=0, evictions=0, expirations=0)


def test_from_config_builds_the_settings_and_names_bad_keys(tmp_path):
    built = ContextManager.from_config({"persistence": "sqlite", "path": str(tmp_path / "c.db"),
                                        "default_ttl_s": 30})
    assert built.settings.default_ttl_s == 30
    with pytest.raises(ConfigError) as caught:
        ContextManager.from_config({"max_items": -1})
    assert caught.value.details["key"] == "context.max_items"


def test_sweep_uses_the_configured_batch(clock):
    m = ContextManager(ContextSettings(sweep_batch=2, default_ttl_s=1), clock=clock)
    for _ in range(5):
        m.store(item())
    clock.advance(2)
    assert m.sweep() == 2 and m.sweep(10) == 3

# ---- wav2vec2 -------------------------------------------------------------------


def test_wav2vec2_gets_defaults_when_nothing_is_stored(m):
    reply = m.get_context_for_model("wav2vec2")
    assert isinstance(reply, ModelContext) and reply.item_ids == ()
    assert reply.data == {"sample_rate": 16000, "channels": 1, "language": "en", "vocabulary_hints": []}


def test_wav2vec2_merges_its_item_types_newest_first(m, clock):
    old = m.store(item("audio_parameters", {"sample_rate": 8000, "channels": 2, "language": "de"})).item_id
    clock.advance(1)
    m.store(item("prompt", {"text": "ignored by wav2vec2"}))
    newer = m.store(item("processing_requirements", {"language": "fr",
                                                     "vocabulary_hints": ["grym", "synth"]})).item_id
    reply = m.get_context_for_model("wav2vec2")
    assert reply.data == {"sample_rate": 8000, "channels": 2, "language": "fr",
                          "vocabulary_hints": ["grym", "synth"]}
    assert reply.item_ids == (old, newer)
    m.update(old, {"content": {"language": "es"}})  # now the newest write
    assert m.get_context_for_model("wav2vec2").data["language"] == "es"


@pytest.mark.parametrize("content, field", [
    ({"sample_rate": "fast"}, "sample_rate"), ({"sample_rate": 10}, "sample_rate"),
    ({"channels": 0}, "channels"), ({"language": 5}, "language"),
    ({"vocabulary_hints": "one"}, "vocabulary_hints"), ("not an object", "audio_parameters"),
])
def test_wav2vec2_refuses_bad_values_naming_the_field(m, content, field):
    m.store(item("audio_parameters", content))
    with pytest.raises(InvalidInput) as caught:
        m.get_context_for_model("wav2vec2")
    assert caught.value.details["field"] == field


def test_context_is_scoped_by_task_priority_and_filter(m):
    m.store(item("audio_parameters", {"sample_rate": 8000}, task_id="t1", priority="low"))
    m.store(item("audio_parameters", {"channels": 2}, task_id="t1", priority="high", source="mic"))
    m.store(item("audio_parameters", {"language": "de"}, task_id="t2"))
    assert m.get_context_for_model("wav2vec2", task_id="t1").data["sample_rate"] == 8000
    assert m.get_context_for_model("wav2vec2", task_id="t1").data["language"] == "en"
    high = m.get_context_for_model("wav2vec2", task_id="t1", priority="high").data
    assert (high["sample_rate"], high["channels"]) == (16000, 2)
    only_mic = m.get_context_for_model("wav2vec2", filter=ContextFilter(sources="mic"))
    assert len(only_mic.item_ids) == 1
    other_types = m.get_context_for_model("wav2vec2", filter=ContextFilter(types="prompt"))
    assert other_types.item_ids == () and other_types.data["channels"] == 1


def test_a_task_gets_the_shared_items_under_its_own(m, clock):
    m.store(item("audio_parameters", {"sample_rate": 8000, "language": "fr"}))  # no task: shared
    clock.advance(1)
    m.store(item("audio_parameters", {"sample_rate": 22050}, task_id="t1"))
    clock.advance(1)
    m.store(item("audio_parameters", {"language": "de"}, task_id="t2"))
    t1 = m.get_context_for_model("wav2vec2", task_id="t1")
    assert (t1.data["sample_rate"], t1.data["language"]) == (22050, "fr")
    assert len(t1.item_ids) == 2  # t2's item is not in it
    t3 = m.get_context_for_model("wav2vec2", task_id="t3")
    assert (t3.data["sample_rate"], t3.data["language"]) == (8000, "fr")


def test_the_request_ref_is_echoed(m):
    assert m.get_context_for_model("wav2vec2", ref=17).ref == 17

# ---- generation and unknown models -------------------------------------------------


def test_generation_merges_style_parameters_and_prompt(m):
    m.store(item("prompt", "an early prompt"))
    m.store(item("stylistic_preferences", {"mood": "calm", "tempo": 90}))
    m.store(item("generation_parameters", {"temperature": 0.7}))
    m.store(item("stylistic_preferences", {"tempo": 120, "key": "C"}))
    m.store(item("prompt", {"text": "a storm over the sea"}))
    data = m.get_context_for_model("generation").data
    assert data == {"prompt": "a storm over the sea",
                    "style": {"mood": "calm", "tempo": 120, "key": "C"},
                    "parameters": {"temperature": 0.7, "top_p": 1.0, "max_new_tokens": 256}}


@pytest.mark.parametrize("type_, content, field", [
    ("generation_parameters", {"temperature": -1}, "temperature"),
    ("generation_parameters", {"top_p": 0}, "top_p"),
    ("generation_parameters", {"max_new_tokens": 1.5}, "max_new_tokens"),
    ("prompt", {"words": "no text key"}, "prompt"),
    ("stylistic_preferences", ["not", "an", "object"], "stylistic_preferences"),
])
def test_generation_refuses_bad_values_naming_the_field(m, type_, content, field):
    m.store(item(type_, content))
    with pytest.raises(InvalidInput) as caught:
        m.get_context_for_model("generation")
    assert caught.value.details["field"] == field


def test_an_unknown_model_type_gets_every_type_passed_through(m):
    m.store(item("features", {"a": 1, "b": {"c": 1}}))
    m.store(item("prompt", "hello"))
    m.store(item("features", {"b": {"d": 2}}))
    data = m.get_context_for_model("echo").data
    assert data == {"features": {"a": 1, "b": {"c": 1, "d": 2}}, "prompt": "hello"}

# ---- where adapters come from --------------------------------------------------------


class FakeEntryPoint:
    def __init__(self, name: str, target):
        self.name, self.value, self._target = name, f"fake:{name}", target

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


class UpperAdapter:
    item_types = frozenset({"prompt"})

    def adapt(self, items):
        return {"prompt": items[-1].content.upper() if items else ""}


def test_adapters_come_from_entry_points_over_the_built_ins(monkeypatch, m):
    points = [FakeEntryPoint("shout", UpperAdapter), FakeEntryPoint("broken", ImportError("no module")),
              FakeEntryPoint("generation", UpperAdapter)]
    monkeypatch.setattr(adapters, "entry_points", lambda group: points if group == adapters.ENTRY_POINT_GROUP else [])
    found = adapters.discover_adapters()
    assert found["shout"] is UpperAdapter and found["generation"] is UpperAdapter
    assert found["wav2vec2"] is Wav2Vec2Adapter and "broken" not in found
    manager = ContextManager(clock=FakeClock())
    manager.store(item("prompt", "quiet"))
    assert manager.get_context_for_model("shout").data == {"prompt": "QUIET"}


def test_built_ins_work_without_installation(monkeypatch):
    monkeypatch.setattr(adapters, "entry_points", lambda group: [])
    assert adapters.discover_adapters() == {"wav2vec2": Wav2Vec2Adapter, "generation": GenerationAdapter}


def test_adapters_can_be_given_directly():
    manager = ContextManager(clock=FakeClock(), adapters={"only": UpperAdapter})
    manager.store(item("prompt", "x"))
    assert manager.get_context_for_model("only").data == {"prompt": "X"}
    assert manager.get_context_for_model("wav2vec2").data == {"prompt": "x"}  # pass-through now
