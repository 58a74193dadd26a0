"""The Supervisor's handling of messages, in one process: each restart and health rule in
milliseconds.

The supervisor is built with Thespian's ``send``, ``wakeupAfter`` and ``createActor``
replaced by recorders (tests/unit/actor_harness.py), a clock, and no real processes
to kill. The service actor's and router's sides of a normal exit and of a context
move are checked the same way at the end.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from thespian.actors import ActorExitRequest, ChildActorExited

import supervisor.actor as supervisor_module
from actors.router import TaskRouter
from actors.service_actor import ServiceActor
from messages.errors import ErrorCode
from messages.service import (
    ConfigureService, Heartbeat, HeartbeatAck, ServiceStatus, ServiceStopped, Shutdown,
    StatusReply,
)
from messages.system import (
    ContextMoved, ContextSetup, DrainDone, ErrorReply, GetService, HealthCause, HealthEvent,
    HealthEventKind, RouterSetup, ServiceDirectoryUpdate, ShutdownSystem, StartSystem,
    RoutesApplied, SubscribeHealth, SystemStopped,
)
from messages.task import Task, TaskResult
from supervisor.actor import Supervisor
from supervisor.children import core_children
from supervisor.config import RESERVED_NAMES
from tests.unit.actor_harness import Clock, deliver, fire_timers, harness, to, wait_for_worker

S, E = ServiceStatus, HealthEventKind
HOST, WATCHER = "host", "watcher"


class Sup:
    """A supervisor under test, and what it did."""

    def __init__(self, actor: Any, clock: Clock, killed: list[int]):
        self.actor, self.clock, self.killed = actor, clock, killed
        self.created: list[str] = []
        self.at_start: list[tuple[Any, Any]] = []

    def address(self, name: str) -> Any:
        child = self.actor.core.get(name) or self.actor.services[name]
        return child.address

    def deliver(self, msg: Any, sender: Any) -> list[tuple[Any, Any]]:
        return deliver(self.actor, msg, sender)

    def to_router(self, sent: list[tuple[Any, Any]]) -> list[Any]:
        return to(sent, self.address("router"))

    def events(self, sent: list[tuple[Any, Any]]) -> list[HealthEvent]:
        return to(sent, WATCHER)

    def tick(self, acks: dict[str, dict[str, Any]] | None = None) -> list[tuple[Any, Any]]:
        """Answer the last heartbeat for each named child (with ``acks``' fields),
        then let the heartbeat timer fire: what the supervisor sent."""
        for name, fields in (acks or {}).items():
            self.deliver(HeartbeatAck(seq=1, pid=4242, **fields), self.address(name))
        timers, self.actor.timers = self.actor.timers, []
        beat = [t for t in timers if t[1] == ("heartbeat",)]
        self.actor.timers = [t for t in timers if t[1] != ("heartbeat",)]
        assert beat, "the heartbeat timer must be armed"
        self.actor.sent.clear()
        fired = []
        for delay, payload in beat:
            fired += self.deliver(supervisor_module.WakeupMessage(delay, payload), "thespian")
        return fired


@pytest.fixture
def make(monkeypatch):
    clock, killed = Clock(), []
    monkeypatch.setattr(supervisor_module, "time", clock)
    monkeypatch.setattr(supervisor_module, "kill_process",
                        lambda pid: killed.append(pid) if pid is not None else None)
    monkeypatch.setattr(supervisor_module, "process_gone", lambda pid: False)

    def start(services: dict[str, dict[str, Any]], **config: Any) -> Sup:
        actor = harness(Supervisor)
        sup = Sup(actor, clock, killed)

        def create(actor_class: str, *args: Any, **kw: Any) -> str:
            sup.created.append(actor_class)
            return f"{actor_class.rpartition('.')[2]}#{len(sup.created)}"

        actor.createActor = create
        actor._myRef = SimpleNamespace(address="supervisor")  # what Thespian sets up
        sup.at_start = sup.deliver(StartSystem({"services": services, **config}), HOST)
        sup.deliver(SubscribeHealth(), WATCHER)
        actor.sent.clear()
        return sup

    return start


def echo(**fields: Any) -> dict[str, Any]:
    return {"kind": "echo", **fields}


def online(sup: Sup, name: str = "echo") -> None:
    sup.deliver(StatusReply(name=name, status=S.ONLINE, pid=4242, initialized=True),
                sup.address(name))


def stops_normally(sup: Sup, name: str = "echo") -> list[tuple[Any, Any]]:
    """The service asks to end normally, the supervisor ends it, and its exit arrives."""
    address = sup.address(name)
    child = sup.actor.services[name]
    asked = sup.deliver(ServiceStopped(name, child.generation, "its work is done"), address)
    assert [type(m) for m in to(asked, address)] == [ActorExitRequest]
    return asked + sup.deliver(ChildActorExited(address), "thespian")


def crashes(sup: Sup, name: str = "echo") -> list[tuple[Any, Any]]:
    return sup.deliver(ChildActorExited(sup.address(name)), "thespian")


SERVICE_CLASS = "actors.service_actor.ServiceActor"


# -- child specs -------------------------------------------------------------------------
def test_every_child_starts_from_its_spec(make):
    sup = make({"echo": echo()})
    assert sup.created == ["actors.context_actor.ContextActor", "actors.router.TaskRouter",
                           SERVICE_CLASS]
    first = {}  # each child's first message: its set-up
    for addr, msg in sup.at_start:
        first.setdefault(addr, msg)
    context, router, service = (sup.address(n) for n in ("context", "router", "echo"))
    assert isinstance(first[context], ContextSetup)
    assert isinstance(first[router], RouterSetup) and first[router].context == context
    assert [d.name for d in first[router].directory] == ["echo"]
    assert isinstance(first[service], ConfigureService) and first[service].generation == 1
    # The router then learns where the service is.
    [entry] = [m for m in to(sup.at_start, router) if isinstance(m, ServiceDirectoryUpdate)]
    assert (entry.name, entry.address, entry.generation) == ("echo", service, 1)


def test_core_children_are_apart_from_services_and_reserved():
    assert {spec.name for spec in core_children()} <= RESERVED_NAMES


def test_a_core_child_is_not_a_service(make):
    sup = make({"echo": echo()})
    [reply] = to(sup.deliver(GetService("router"), HOST), HOST)
    assert isinstance(reply, ErrorReply) and reply.error.code is ErrorCode.SERVICE_NOT_FOUND


# -- restart types (OTP) -------------------------------------------------------------------
def test_a_permanent_child_is_restarted_after_a_crash(make):
    sup = make({"echo": echo()})
    sent = crashes(sup)
    assert sup.created.count(SERVICE_CLASS) == 2
    lost, new = [m for m in sup.to_router(sent) if isinstance(m, ServiceDirectoryUpdate)]
    assert (lost.generation, lost.address, lost.lost_code) == (1, None, "EXECUTION_ERROR")
    assert (new.generation, new.address) == (2, sup.address("echo"))
    assert [e.kind for e in sup.events(sent)] == [E.SERVICE_RESTARTED]


def test_a_permanent_child_is_restarted_after_a_normal_exit(make):
    sup = make({"echo": echo(restart="permanent")})
    sent = stops_normally(sup)
    assert sup.created.count(SERVICE_CLASS) == 2
    assert [e.kind for e in sup.events(sent)] == [E.SERVICE_RESTARTED]


def test_a_transient_child_that_ends_normally_is_not_restarted(make):
    sup = make({"echo": echo(restart="transient")})
    online(sup)
    sent = stops_normally(sup)
    assert sup.created.count(SERVICE_CLASS) == 1
    child = sup.actor.services["echo"]
    assert child.status is S.STOPPED and child.restart.total_restarts == 0
    [event] = sup.events(sent)
    assert event.kind is E.SERVICE_STOPPED and "its work is done" in event.reason
    updates = [m for m in sup.to_router(sent) if isinstance(m, ServiceDirectoryUpdate)]
    assert [u.status for u in updates] == [S.STOPPING, S.STOPPED]
    assert updates[-1].address is None and updates[-1].lost_code == "SHUTTING_DOWN"
    [reply] = to(sup.deliver(GetService("echo"), HOST), HOST)
    assert reply.error.code is ErrorCode.SERVICE_UNAVAILABLE and "stopped" in reply.error.message


def test_a_transient_child_that_crashes_is_restarted(make):
    sup = make({"echo": echo(restart="transient")})
    crashes(sup)
    assert sup.created.count(SERVICE_CLASS) == 2


def test_a_temporary_child_is_never_restarted(make):
    sup = make({"a": echo(restart="temporary"), "b": echo(restart="temporary")},
               routes={"echo": "a"})
    crashed = crashes(sup, "a")
    ended = stops_normally(sup, "b")
    assert sup.created.count(SERVICE_CLASS) == 2
    assert sup.actor.services["a"].status is S.FAILED
    assert sup.actor.services["b"].status is S.STOPPED
    assert [e.kind for e in sup.events(crashed + ended)] == [E.SERVICE_FAILED, E.SERVICE_STOPPED]


def test_a_stale_or_foreign_stop_request_is_ignored(make):
    sup = make({"echo": echo(restart="transient")})
    assert sup.deliver(ServiceStopped("echo", 7, "old generation"), sup.address("echo")) == []
    assert sup.deliver(ServiceStopped("echo", 1, "not a child"), HOST) == []
    crashes(sup)  # so its exit is a crash, and it is restarted
    assert sup.created.count(SERVICE_CLASS) == 2


# -- health verdicts -------------------------------------------------------------------------
def test_a_hung_child_is_killed_and_its_callers_get_timeout(make):
    sup = make({"echo": echo()}, health={"hang_grace_s": 0.5})
    online(sup)
    sent = sup.tick({"echo": {"overdue_s": 2.0}})
    assert sup.killed == [4242]
    [unhealthy, restarted] = sup.events(sent)
    assert unhealthy.kind is E.SERVICE_UNHEALTHY and unhealthy.cause is HealthCause.HUNG
    assert restarted.kind is E.SERVICE_RESTARTED
    lost = next(m for m in sup.to_router(sent)
                if isinstance(m, ServiceDirectoryUpdate) and m.lost_reason)
    assert lost.lost_code == ErrorCode.TIMEOUT.value and "hung" in lost.lost_reason


def test_missed_heartbeats_kill_with_service_unavailable(make):
    sup = make({"echo": echo()}, health={"missed_heartbeats": 2})
    online(sup)
    sup.tick({"echo": {}})
    sup.tick()
    sent = sup.tick()  # two unanswered before this one
    lost = next(m for m in sup.to_router(sent)
                if isinstance(m, ServiceDirectoryUpdate) and m.lost_reason)
    assert lost.lost_code == ErrorCode.SERVICE_UNAVAILABLE.value
    assert sup.events(sent)[0].cause is HealthCause.MISSED_HEARTBEATS


def test_a_degraded_child_is_reported_once_per_cause(make):
    sup = make({"echo": echo(max_memory="1MB")},
               health={"degrade_min_requests": 10, "degrade_error_rate": 0.5})
    online(sup)
    failing = {"error_rate": 0.9, "recent_requests": 20}
    first = sup.tick({"echo": failing})
    again = sup.tick({"echo": failing})
    other = sup.tick({"echo": {"rss_bytes": 50 << 20}})
    well = sup.tick({"echo": {}})
    assert [(e.kind, e.cause) for e in sup.events(first)] == [(E.SERVICE_DEGRADED,
                                                               HealthCause.ERROR_RATE)]
    assert sup.events(again) == []
    assert [(e.kind, e.cause) for e in sup.events(other)] == [(E.SERVICE_DEGRADED,
                                                               HealthCause.MEMORY)]
    assert [(e.kind, e.cause) for e in sup.events(well)] == [(E.SERVICE_RECOVERED,
                                                              HealthCause.HEALTHY)]
    # The router hears of the state changes only, not of the second cause.
    def states(sent):
        return [m.status for m in sup.to_router(sent) if isinstance(m, ServiceDirectoryUpdate)]
    assert (states(first), states(again), states(other), states(well)) == (
        [S.DEGRADED], [], [], [S.ONLINE])


def test_malformed_acks_are_refused_and_the_heartbeat_goes_on(make):
    sup = make({"echo": echo()})
    forged = object.__new__(HeartbeatAck)
    for name, value in dict(seq=1, pid=4242, name="", generation=0, status=S.ONLINE,
                            queue_depth=0, busy_for_s=0.0, overdue_s="late", rss_bytes=0,
                            error_rate=0.0, recent_requests=0).items():
        object.__setattr__(forged, name, value)
    [reply] = sup.deliver(forged, sup.address("echo"))
    assert reply[1].error.code is ErrorCode.INVALID_INPUT
    sup.tick()
    assert any(t[1] == ("heartbeat",) for t in sup.actor.timers)


# -- the context actor and the router ----------------------------------------------------------
def test_a_restarted_context_actor_is_announced_to_the_router_in_a_message_of_its_own(make):
    sup = make({"echo": echo()})
    old = sup.address("context")
    sent = crashes(sup, "context")
    moved = sup.to_router(sent)
    assert all(isinstance(m, ContextMoved) for m in moved)
    assert [(m.address, m.generation) for m in moved] == [(None, 1), (sup.address("context"), 2)]
    assert sup.address("context") != old


def test_a_restarted_router_is_set_up_complete(make):
    sup = make({"echo": echo()})
    online(sup)
    sent = crashes(sup, "router")
    [setup] = sup.to_router(sent)
    assert isinstance(setup, RouterSetup) and setup.context == sup.address("context")
    [entry] = setup.directory
    assert (entry.name, entry.address, entry.status) == ("echo", sup.address("echo"), S.ONLINE)


# -- shutdown budget ---------------------------------------------------------------------------
@pytest.mark.parametrize("table, budget_s", [({}, 5.0), ({"shutdown_s": 30}, 30.0)])
def test_a_service_past_its_shutdown_budget_is_killed(make, table, budget_s):
    sup = make({"echo": {**echo(), **table}})
    online(sup)
    sup.actor.timers.clear()
    sup.deliver(ShutdownSystem(drain_s=1.0), HOST)
    sent = sup.deliver(DrainDone(token=sup.actor.token), sup.address("router"))
    assert [type(m) for m in to(sent, sup.address("echo"))] == [Shutdown]
    budget = [(d, p) for d, p in sup.actor.timers if p[0] == "stop-timeout"]
    assert [d for d, _ in budget] == [1.0 + budget_s]  # OTP's default, or the service's own
    sup.actor.timers = budget
    sent = fire_timers(sup.actor)
    assert sup.killed == [4242]
    assert [type(m) for m in to(sent, HOST)] == [SystemStopped]


def test_every_asker_of_a_stop_is_answered_and_a_late_one_at_once(make):
    """A host's stop tells the launcher, which asks too: both get SystemStopped, and one
    asking after the stop is answered at once (not left to wait for its timeout)."""
    sup = make({"echo": echo()})
    online(sup)
    sup.deliver(ShutdownSystem(drain_s=1.0), HOST)
    sup.deliver(ShutdownSystem(drain_s=1.0), WATCHER)
    sup.deliver(DrainDone(token=sup.actor.token), sup.address("router"))
    sent = crashes(sup)  # its process ends after the Shutdown
    assert [type(m) for m in to(sent, HOST)] == [SystemStopped]
    assert [type(m) for m in to(sent, WATCHER)] == [SystemStopped]
    late = sup.deliver(ShutdownSystem(drain_s=1.0), "launcher")
    assert [type(m) for m in to(late, "launcher")] == [SystemStopped]


def test_the_routers_answers_without_its_token_are_refused(make):
    """DrainDone and RoutesApplied move a stop and an apply on: from anyone but the
    router (no token) they are refused with an answer, not dropped in silence."""
    sup = make({"echo": echo()})
    online(sup)
    for forged in (DrainDone(token="guess"), RoutesApplied(ref=1, token="guess")):
        [(to_whom, answer)] = sup.deliver(forged, HOST)
        assert to_whom == HOST and isinstance(answer, ErrorReply)
        assert answer.error.code is ErrorCode.INVALID_INPUT
    assert not sup.actor.shutting_down


# -- the other sides: the service actor ends normally, the router follows the context ----------
def test_the_service_actor_ends_normally_when_its_kind_asks():
    actor = harness(ServiceActor)
    deliver(actor, ConfigureService(name="once", kind="echo", settings=_echo_settings(),
                                    max_queue=4, max_batch_size=1, max_batch_delay_ms=0,
                                    generation=3, default_task_timeout_s=5.0, eager=True,
                                    token="t"), "supervisor")
    wait_for_worker(actor)  # loaded
    actor.sent.clear()
    deliver(actor, Task(id="last", type="echo", data=1, metadata={"inject": "exit"}), "caller")
    sent = wait_for_worker(actor)  # the task ran and the service asked to end
    [result] = to(sent, "caller")
    assert isinstance(result, TaskResult) and result.ok
    [status] = to(sent, "supervisor")
    assert status.status is S.STOPPING
    refused = deliver(actor, Task(id="late", type="echo"), "caller")
    assert to(refused, "caller")[0].error.code is ErrorCode.SHUTTING_DOWN
    sent = wait_for_worker(actor)  # the model was released
    assert [type(m) for m in to(sent, "supervisor")] == [ServiceStopped]
    stopped = to(sent, "supervisor")[0]
    assert (stopped.name, stopped.generation) == ("once", 3) and "'last'" in stopped.reason
    [ack] = to(deliver(actor, Heartbeat(9), "supervisor"), "supervisor")
    assert (ack.seq, ack.status, ack.name) == (9, S.STOPPED, "once")
    deliver(actor, ActorExitRequest(), "supervisor")


def _echo_settings() -> Any:
    from services.echo import EchoSettings
    return EchoSettings()


def test_the_router_follows_the_context_actor():
    router = harness(TaskRouter)
    deliver(router, RouterSetup(routes={"echo": "echo"}, context="ctx#1",
                                fetch_context=frozenset(), default_timeout_s=5.0, token="t"),
            "supervisor")
    deliver(router, ContextMoved("ctx#2", 2, token="t"), "supervisor")
    assert router.context == "ctx#2"
    refused = deliver(router, ContextMoved("evil", 3, token="wrong"), "someone")
    assert to(refused, "someone")[0].error.code is ErrorCode.INVALID_INPUT
    assert router.context == "ctx#2" and "context" not in router.table.services


# -- hosts that route their own tasks (issue 14) ---------------------------------------------
def test_a_host_gets_the_routers_set_up_then_every_update_the_router_gets(make):
    from messages.system import SubscribeRoutes, UnsubscribeRoutes
    sup = make({"echo": echo()})
    [setup] = to(sup.deliver(SubscribeRoutes(), "host-feed"), "host-feed")
    assert isinstance(setup, RouterSetup) and setup.routes == {"echo": "echo"}
    assert [(d.name, d.address) for d in setup.directory] == [("echo", sup.address("echo"))]
    assert setup.context == sup.address("context")
    sent = crashes(sup)
    # the same messages as the router, in the same order
    assert to(sent, "host-feed") == sup.to_router(sent) and to(sent, "host-feed")
    lost = to(sent, "host-feed")[0]
    assert lost.lost_code == "EXECUTION_ERROR" and lost.generation == 1
    sup.deliver(UnsubscribeRoutes(), "host-feed")
    assert not to(crashes(sup), "host-feed")
