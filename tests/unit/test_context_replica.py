"""The context replica (context/replica.py) against a real ContextManager standing in
for the actor: whatever writes come between its pages and after, the copy serves
exactly what the actor would, and says when only the actor can answer."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st

import context.replica as replica_module
from context import ContextManager, ContextSettings
from context.replica import ContextReplica
from messages.context import ContextChange, ContextFilter, ContextSubscribed, QueryContext

from .test_context_support import FakeClock, item

MODEL = "wav2vec2"  # an adapter with item types and defaults
TYPES = ("audio_parameters", "processing_requirements", "prompt")


class Actor:
    """The manager behind one endpoint: what it sends arrives in the order it sent it."""

    def __init__(self, clock: FakeClock):
        self.m = ContextManager(ContextSettings(max_items=40), clock=clock)
        self.inbox: list = []   # to the replica, in order

    def subscribe(self) -> ContextSubscribed:
        return self.m.subscribe(ContextFilter())

    def handle(self, request: QueryContext) -> None:
        page = self.m.query(request.filter)
        self._flush()
        self.inbox.append(page)

    def write(self, op) -> None:
        op(self.m)
        self._flush()

    def _flush(self) -> None:
        self.inbox += [change for _, change in self.m.take_changes()]


def pump(replica: ContextReplica, actor: Actor, pending: list) -> None:
    """Deliver everything the actor sent; the replica's requests go to the actor."""
    while actor.inbox or pending:
        if pending:
            actor.handle(pending.pop(0))
            continue
        msg = actor.inbox.pop(0)
        nxt = replica.on_change(msg) if isinstance(msg, ContextChange) else replica.on_page(msg)
        if nxt is not None:
            pending.append(nxt)


def writes():
    ident = st.sampled_from([f"i{n}" for n in range(12)])
    task = st.sampled_from([None, None, "t1", "t2"])
    kind = st.sampled_from(TYPES)
    content = st.fixed_dictionaries({"sample_rate": st.sampled_from([8000, 16000, 44100])})
    store = st.builds(lambda i, t, k, c, ttl: ("store", i, t, k, c, ttl), ident, task, kind,
                      content, st.sampled_from([None, 5.0]))
    update = st.builds(lambda i, c: ("update", i, c), ident, content)
    delete = st.builds(lambda i: ("delete", i), ident)
    tick = st.builds(lambda s: ("tick", s), st.sampled_from([1.0, 6.0]))
    return st.lists(st.one_of(store, store, update, delete, tick), max_size=40)


def run(op, m: ContextManager, clock: FakeClock) -> None:
    from messages.errors import GrymError
    try:
        if op[0] == "store":
            _, i, t, k, c, ttl = op
            m.store(item(k, c, id=i, task_id=t, ttl_s=ttl))
        elif op[0] == "update":
            m.update(op[1], {"content": op[2]})
        elif op[0] == "delete":
            m.delete(op[1])
        else:
            clock.advance(op[1])
            m.sweep()
    except GrymError:
        pass  # not found, and the like: the store said no, as it would


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=writes(), during=writes(), after=writes(), page=st.sampled_from([1, 2, 3, 100]))
@example(before=[("store", f"i{n}", None, "prompt", {"sample_rate": 8000}, None) for n in range(3)],
         during=[("update", "i0", {"sample_rate": 16000})], after=[], page=1)  # a shift mid-read
def test_the_copy_answers_as_the_actor_would(monkeypatch, before, during, after, page):
    monkeypatch.setattr(replica_module, "PAGE", page)
    clock = FakeClock()
    actor = Actor(clock)
    for op in before:
        actor.write(lambda m, op=op: run(op, m, clock))
    actor.inbox.clear()  # the changes before the subscription are not sent to it
    replica = ContextReplica(clock=clock)
    pending = [replica.start(actor.subscribe())]
    # Writes land between the pages of the read: one before each request is handled.
    for op in during:
        if pending:
            actor.handle(pending.pop(0))
        actor.write(lambda m, op=op: run(op, m, clock))
        while actor.inbox:
            msg = actor.inbox.pop(0)
            nxt = replica.on_change(msg) if isinstance(msg, ContextChange) else replica.on_page(msg)
            if nxt is not None:
                pending.append(nxt)
    pump(replica, actor, pending)
    for op in after:
        actor.write(lambda m, op=op: run(op, m, clock))
    pump(replica, actor, pending)
    assert replica.ready
    for model in (MODEL, "any-type"):  # an unknown model type passes every type through
        for task_id in ("t1", "t2", "t3"):
            mine = replica.model_context(model, task_id)
            own = actor.m.query(ContextFilter(task_id=task_id)).total
            if own:
                assert mine is None  # items of its own: only the actor answers
                continue
            if mine is None:  # a sliding TTL would be restarted by the read: the actor's job
                continue
            theirs = actor.m.get_context_for_model(model, task_id)
            assert mine == (dict(theirs.data), theirs.item_ids)


def test_a_gap_in_the_sequence_forces_a_full_read():
    clock = FakeClock()
    actor = Actor(clock)
    replica = ContextReplica(clock=clock)
    pending = [replica.start(actor.subscribe())]
    pump(replica, actor, pending)
    actor.write(lambda m: m.store(item("audio_parameters", {"sample_rate": 8000}, id="a")))
    actor.write(lambda m: m.store(item("audio_parameters", {"sample_rate": 44100}, id="b")))
    lost = actor.inbox.pop(0)  # the first change never arrives
    assert lost.seq == 1
    assert replica.reads == 1
    pump(replica, actor, pending)
    assert replica.reads == 2 and replica.ready  # read again, and in step
    data, ids = replica.model_context(MODEL, "t")
    assert data["sample_rate"] == 44100 and ids == ("a", "b")


def test_it_waits_for_its_callers_own_write_and_leaves_sliding_items_to_the_actor():
    clock = FakeClock()
    actor = Actor(clock)
    replica = ContextReplica(clock=clock)
    pending = [replica.start(actor.subscribe())]
    pump(replica, actor, pending)
    ack = actor.m.store(item("audio_parameters", {"sample_rate": 8000}, id="a"))
    replica.written(ack.seq)  # acknowledged to our caller, not yet in the copy
    assert replica.model_context(MODEL, "t") is None
    actor._flush()
    pump(replica, actor, pending)
    assert replica.model_context(MODEL, "t")[0]["sample_rate"] == 8000
    actor.write(lambda m: m.store(item("audio_parameters", {"sample_rate": 16000}, id="s",
                                       sliding_ttl=True)))
    pump(replica, actor, pending)
    assert replica.model_context(MODEL, "t") is None


def test_expired_items_drop_out_before_the_sweep_says_so():
    clock = FakeClock()
    actor = Actor(clock)
    replica = ContextReplica(clock=clock)
    pending = [replica.start(actor.subscribe())]
    actor.write(lambda m: m.store(item("audio_parameters", {"sample_rate": 8000}, ttl_s=5)))
    pump(replica, actor, pending)
    assert replica.model_context(MODEL, "t")[0]["sample_rate"] == 8000
    clock.advance(6)
    assert replica.model_context(MODEL, "t")[0]["sample_rate"] == 16000  # the default


@pytest.mark.parametrize("model", ["wav2vec2", "some-unknown-model"])
def test_an_empty_store_gives_the_adapters_defaults(model):
    clock = FakeClock()
    actor = Actor(clock)
    replica = ContextReplica(clock=clock)
    pending = [replica.start(actor.subscribe())]
    pump(replica, actor, pending)
    theirs = actor.m.get_context_for_model(model, "t")
    assert replica.model_context(model, "t") == (dict(theirs.data), theirs.item_ids)


def test_a_change_between_pages_does_not_make_the_read_skip_an_item(monkeypatch):
    monkeypatch.setattr(replica_module, "PAGE", 1)
    clock = FakeClock()
    actor = Actor(clock)
    for name, rate in (("a", 8000), ("b", 22050), ("c", 44100)):
        actor.write(lambda m, name=name, rate=rate: m.store(
            item("audio_parameters", {"sample_rate": rate}, id=name)))
    actor.inbox.clear()
    replica = ContextReplica(clock=clock)
    actor.handle(replica.start(actor.subscribe()))   # page 1: a
    actor.write(lambda m: m.update("a", {"content": {"channels": 2}}))  # a moves to the end
    pending: list = []
    pump(replica, actor, pending)                     # without the shift, page 2 would be c
    theirs = actor.m.get_context_for_model(MODEL, "t")
    assert replica.model_context(MODEL, "t") == (dict(theirs.data), theirs.item_ids)
    assert replica.model_context(MODEL, "t")[1] == ("b", "c", "a")
