"""The ContextActor in a running system: the route path, persistence across kill -9."""
from __future__ import annotations

import os
import signal

import pytest

from messages import ErrorCode, Task
from messages.context import ContextFilter, ContextItem
from messages.errors import Conflict, NotFound
from tests.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_router_fetches_context_and_stores_task_history(start_system):
    system = start_system({"services": {"echo": {"kind": "echo", "eager": True}}})
    system.context.store(ContextItem(type="audio_parameters", content={"sample_rate": 8000},
                                     source="host", task_id="t1"))
    ctx = system.context.get_context_for_model("echo", task_id="t1")
    assert ctx["audio_parameters"]["sample_rate"] == 8000
    result = system.router.route_task(Task(id="t1", type="echo", data={"n": 1},
                                           store_results=True))
    assert result.ok and result.metrics.context_fetch_ms > 0
    history = wait_until(lambda: system.context.query(
        ContextFilter(types=frozenset({"task_history"}), task_id="t1")).items, timeout=5)
    assert history[0].content["result"] == {"n": 1}
    assert history[0].source == "echo"


def test_context_errors_are_typed(start_system):
    system = start_system({"services": {"echo": {"kind": "echo", "eager": True}}})
    with pytest.raises(NotFound):
        system.context.retrieve("no-such-id")
    ack = system.context.store(ContextItem(type="prompt", content={"text": "a"}, source="host"))
    with pytest.raises(Conflict) as err:
        system.context.update(ack.item_id, {"content": {"text": "b"}},
                              expected_version=ack.version + 5)
    assert err.value.code is ErrorCode.CONFLICT


def test_acknowledged_writes_survive_kill_9_of_the_context_actor(start_system, tmp_path):
    system = start_system({"services": {"echo": {"kind": "echo", "eager": True}},
                           "context": {"persistence": "sqlite", "path": str(tmp_path / "ctx.db")}})
    acks = [system.context.store(ContextItem(type="prompt", content={"i": i}, source="host"))
            for i in range(50)]
    context_pid = wait_until(  # known from its first heartbeat
        lambda: next(c.pid for c in system.refresh().core if c.name == "context"), timeout=5)
    os.kill(context_pid, signal.SIGKILL)
    wait_until(lambda: next(c for c in system.refresh().core if c.name == "context").pid
               not in (None, context_pid), timeout=5)
    for ack in acks:
        assert system.context.retrieve(ack.item_id).content == {"i": acks.index(ack)}
    # The router was told the new address: routed tasks still get context.
    result = system.router.route_task(Task(id="after", type="echo", data=1))
    assert result.ok and result.metrics.context_fetch_ms > 0


def test_a_subscriber_sees_every_matching_change_once_in_order(start_system):
    system = start_system({"services": {"echo": {"kind": "echo", "eager": True}}})
    with system.context.subscribe(ContextFilter(types=frozenset({"prompt"}))) as sub:
        acks = [system.context.store(ContextItem(type="prompt", content={"i": i}, source="host"))
                for i in range(20)]
        system.context.store(ContextItem(type="features", content={}, source="host"))  # no match
        system.context.update(acks[0].item_id, {"content": {"i": 100}})
        system.context.delete(acks[1].item_id)
        changes = [sub.next(timeout=5) for _ in range(22)]
        assert sub.next(timeout=0.3) is None  # nothing more: the features item did not match
    kinds = [c.kind.value for c in changes]
    assert kinds == ["stored"] * 20 + ["updated", "deleted"]
    seqs = [c.seq for c in changes]
    assert seqs == sorted(set(seqs)), "each change once, in order"
    # A subscriber that was away asks for what it missed since a sequence number.
    with system.context.subscribe(ContextFilter(types=frozenset({"prompt"})),
                                  since_seq=seqs[9]) as late:
        replayed = [late.next(timeout=5).seq for _ in range(12)]
    assert replayed == seqs[10:]
