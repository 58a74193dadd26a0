"""Applying a config, in the actor shells, in one process: the supervisor's phases
(stage, move traffic, drain), the router's atomic switch and its drain of a replaced
generation, and the service actor's warm-up and fresh import of its kind's code."""
from __future__ import annotations

import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from thespian.actors import ActorExitRequest, ChildActorExited

import actors.router as router_module
import supervisor.actor as supervisor_module
from actors.router import TaskRouter
from actors.service_actor import ServiceActor
from messages.errors import ErrorCode, is_retryable
from messages.service import (
    ConfigureService, ServiceStatus, ServiceTask, ServiceTaskDone, Shutdown, StatusReply,
)
from messages.system import (
    ApplyConfig, ApplyReport, ApplyRoutes, ConfigApplied, ErrorReply, GetService,
    HealthEventKind, RouterSetup, RoutesApplied, ServiceDirectoryUpdate, ShutdownSystem,
)
from messages.task import Task, TaskResult
from tests.unit.actor_harness import Clock, deliver, fire_timers, harness, to, wait_for_worker
from tests.unit.test_supervisor_shell import HOST, SERVICE_CLASS, Sup, echo, make, online  # noqa: F401

S, E = ServiceStatus, HealthEventKind
LAUNCHER = "launcher"


def apply(sup: Sup, services: dict[str, Any], **config: Any) -> list[tuple[Any, Any]]:
    return sup.deliver(ApplyConfig({"services": services, **config}), HOST)


def staged(sup: Sup, name: str = "echo") -> Any:
    return sup.actor.rollout.staged[name]


def goes_online(sup: Sup, child: Any) -> list[tuple[Any, Any]]:
    return sup.deliver(StatusReply(name=child.name, status=S.ONLINE, pid=5000 + child.generation,
                                   initialized=True), child.address)


def router_answers(sup: Sup) -> list[tuple[Any, Any]]:
    """The router has answered what it sent the old generations; after a grace for the
    hosts' replicas, they drain."""
    sent = sup.deliver(RoutesApplied(ref=sup.actor.rollout.ref, token=sup.actor.token),
                       sup.address("router"))
    grace = [t for t in sup.actor.timers if t[1][0] == "apply-drain"]
    assert len(grace) == 1 and to(sent, HOST) == []
    sup.actor.timers = [t for t in sup.actor.timers if t[1][0] != "apply-drain"]
    for delay, payload in grace:
        sent += sup.deliver(supervisor_module.WakeupMessage(delay, payload), "thespian")
    return sent


def old_ends(sup: Sup, child: Any) -> list[tuple[Any, Any]]:
    """The retiring child released its model (answering the Shutdown), then exits."""
    released = sup.deliver(StatusReply(name=child.name, status=S.OFFLINE, pid=4242,
                                       initialized=False), child.address)
    assert [type(m) for m in to(released, child.address)] == [ActorExitRequest]
    return released + sup.deliver(ChildActorExited(child.address), "thespian")


@pytest.fixture
def running(make) -> Sup:
    sup = make({"echo": echo(eager=True)})
    sup.actor.launcher = LAUNCHER
    online(sup)
    sup.actor.sent.clear()
    return sup


def test_a_rolling_update_stages_moves_traffic_at_once_then_drains_the_old(running):
    sup, old = running, running.actor.services["echo"]
    sent = apply(sup, {"echo": echo(eager=True, delay_ms=5)})
    new = staged(sup)
    assert sup.created.count(SERVICE_CLASS) == 2 and new.generation == 2
    # Staged: the router hears nothing of it yet, and the old one still serves.
    assert sup.to_router(sent) == [] and sup.actor.services["echo"] is old
    sent = goes_online(sup, new)
    [moved] = sup.to_router(sent)
    assert isinstance(moved, ApplyRoutes) and moved.routes == {"echo": "echo"}
    assert [(e.name, e.generation, e.address) for e in moved.directory] == [
        ("echo", 2, new.address)]
    assert sup.actor.services["echo"] is new and old.retiring
    assert to(sent, LAUNCHER) == [ConfigApplied(dict(sup.actor.config.raw))]
    # Only once the router has answered what it sent the old one, the old one drains.
    sent = router_answers(sup)
    [shutdown] = to(sent, old.address)
    assert isinstance(shutdown, Shutdown) and shutdown.retiring
    assert to(sent, HOST) == []
    sent = old_ends(sup, old)
    [report] = to(sent, HOST)
    assert isinstance(report, ApplyReport) and report.applied
    assert [s.action for s in report.steps] == ["replace"]
    assert sup.actor.rollout is None and sup.actor.retiring == []
    assert sup.actor.config.services["echo"].settings.delay_ms == 5
    assert sup.events(sent) == []  # not a restart, not a failure
    [info] = to(sup.deliver(GetService("echo", initialize=False), HOST), HOST)
    assert info.generation == 2 and info.restarts == 0


def test_a_new_version_that_fails_to_start_changes_nothing(running):
    sup, old = running, running.actor.services["echo"]
    before = sup.actor.config
    apply(sup, {"echo": echo(eager=True, fail_init=True)})
    new = staged(sup)
    sent = sup.deliver(StatusReply(name="echo", status=S.FAILED, pid=5002, initialized=False,
                                   error=ErrorReply(error=_init_error()).error), new.address)
    [reply] = to(sent, HOST)
    assert isinstance(reply, ErrorReply) and reply.error.code is ErrorCode.INIT_ERROR
    assert "configured to fail" in reply.error.message
    [event] = sup.events(sent)
    assert event.kind is E.ROLLOUT_FAILED and event.service == "echo"
    assert sup.actor.config is before and sup.actor.services["echo"] is old
    assert old.status is S.ONLINE and sup.to_router(sent) == []
    assert sup.actor.rollout is None and "configured to fail" in sup.actor.last_apply
    assert sup.actor._system_info().last_apply.startswith("failed, nothing changed")
    # Not restarted: the failed generation is gone for good.
    assert sup.created.count(SERVICE_CLASS) == 2


def test_a_new_version_that_does_not_come_online_in_time_is_given_up(running):
    sup = running
    apply(sup, {"echo": echo(eager=True, init_delay_ms=10_000)},
          system={"start_timeout_s": 2})
    new = staged(sup)
    sup.actor.timers = [t for t in sup.actor.timers if t[1][0] == "apply-timeout"]
    sent = fire_timers(sup.actor)
    [reply] = to(sent, HOST)
    assert reply.error.code is ErrorCode.INIT_ERROR and "start_timeout_s = 2 s" in reply.error.message
    assert [type(m) for m in to(sent, new.address)] == [ActorExitRequest]
    assert sup.actor.config.system.start_timeout_s != 2


@pytest.mark.parametrize("config, code, key", [
    ({"services": {"echo": {"kind": "echo", "no_such_key": 1}}}, ErrorCode.CONFIG_ERROR,
     "services.echo.no_such_key"),
    ({"services": {"echo": {"kind": "echo"}}, "system": {"start_method": "spawn"}},
     ErrorCode.CONFIG_ERROR, "system.start_method"),
])
def test_a_bad_config_is_refused_whole(running, config, code, key):
    sup, before = running, running.actor.config
    sent = sup.deliver(ApplyConfig(config), HOST)
    [reply] = to(sent, HOST)
    assert reply.error.code is code and reply.error.details["key"] == key
    assert sup.created.count(SERVICE_CLASS) == 1 and sup.actor.config is before
    assert [to_ for to_, _ in sent] == [HOST]


def test_a_dry_run_only_plans(running):
    sup = running
    [report] = to(sup.deliver(ApplyConfig({"services": {"echo": echo(eager=True), "more": echo()},
                                           "routes": {"echo": "echo"}}, dry_run=True), HOST),
                  HOST)
    assert report.dry_run and not report.applied
    assert [(s.action, s.target) for s in report.steps] == [("start", "more")]
    assert sup.created.count(SERVICE_CLASS) == 1


def test_one_apply_at_a_time(running):
    sup = running
    apply(sup, {"echo": echo(eager=True, delay_ms=1)})
    [reply] = to(apply(sup, {"echo": echo(eager=True, delay_ms=2)}), HOST)
    assert reply.error.code is ErrorCode.CONFLICT


def test_a_version_bump_starts_the_new_id_moves_the_route_and_stops_the_old(make):
    sup = make({"asr": echo(version="1", eager=True)})
    online(sup, "asr@1")
    old = sup.actor.services["asr@1"]
    apply(sup, {"asr": echo(version="2", eager=True)})
    sent = goes_online(sup, staged(sup, "asr@2"))
    [moved] = sup.to_router(sent)
    assert moved.routes == {"echo": "asr@2"} and moved.removed == ("asr@1",)
    assert list(sup.actor.services) == ["asr@2"]
    router_answers(sup)
    [report] = to(old_ends(sup, old), HOST)
    assert [(s.action, s.target) for s in report.steps] == [
        ("start", "asr@2"), ("route", "echo"), ("stop", "asr@1")]
    # Its bare name finds the one version that runs.
    [info] = to(sup.deliver(GetService("asr", initialize=False), HOST), HOST)
    assert (info.name, info.version) == ("asr@2", "2")


def test_in_place_changes_touch_no_process(running):
    sup = running
    child = sup.actor.services["echo"]
    sent = apply(sup, {"echo": echo(eager=True, max_restarts=1)}, health={"missed_heartbeats": 9})
    assert sup.created.count(SERVICE_CLASS) == 1  # nothing staged: traffic moves at once
    assert isinstance(sup.to_router(sent)[0], ApplyRoutes)
    assert child.restart.settings.max_restarts == 1
    assert child.health.settings.missed_heartbeats == 9
    [report] = to(router_answers(sup), HOST)
    assert report.applied


def test_a_shutdown_aborts_an_apply_still_starting(running):
    sup = running
    apply(sup, {"echo": echo(eager=True, delay_ms=1)})
    sent = sup.deliver(ShutdownSystem(drain_s=1.0), HOST)
    [reply] = [m for m in to(sent, HOST) if isinstance(m, ErrorReply)]
    assert reply.error.code is ErrorCode.SHUTTING_DOWN


def _init_error():
    from messages.errors import InitError
    return InitError("service 'echo' was configured to fail on start").info()


# -- the router: one message switches the table; the old generation drains ---------------------
TOKEN = "supervisor-token"


def _entry(name: str, address: str, generation: int) -> ServiceDirectoryUpdate:
    return ServiceDirectoryUpdate(name=name, address=address, status=S.ONLINE,
                                  generation=generation, max_queue=8, kind="echo", token=TOKEN)


@pytest.fixture
def router(monkeypatch) -> TaskRouter:
    monkeypatch.setattr(router_module, "time", Clock())
    router = harness(TaskRouter)
    deliver(router, RouterSetup(routes={"echo": "echo"}, context=None, fetch_context=frozenset(),
                                default_timeout_s=30.0, token=TOKEN,
                                directory=(_entry("echo", "old", 1),)), "supervisor")
    return router


def _move(router: TaskRouter, **changes: Any) -> list[tuple[Any, Any]]:
    fields = dict(routes={"echo": "echo"}, fetch_context=frozenset(), default_timeout_s=30.0,
                  directory=(_entry("echo", "new", 2),), drain_s=5.0, ref=7, token=TOKEN)
    return deliver(router, ApplyRoutes(**{**fields, **changes}), "supervisor")


def test_the_router_answers_once_the_old_generation_has_answered(router):
    [(to_old, in_flight)] = deliver(router, Task(id="before", type="echo"), "caller")
    assert to_old == "old"
    assert _move(router) == []  # a task is still out on the old generation
    [(to_new, _)] = deliver(router, Task(id="after", type="echo"), "caller")
    assert to_new == "new"
    sent = deliver(router, ServiceTaskDone(in_flight.request_id, TaskResult.success("before", None)),
                   "old")
    assert to(sent, "caller")[0].ok
    [done] = to(sent, "supervisor")
    assert isinstance(done, RoutesApplied) and (done.ref, done.answered_with_timeout) == (7, 0)


def test_the_router_stops_waiting_at_the_drain_time(router):
    deliver(router, Task(id="slow", type="echo"), "caller")
    _move(router)
    router.timers = [t for t in router.timers if t[1][0] == "retire"]
    [done] = to(fire_timers(router), "supervisor")
    assert done.answered_with_timeout == 1


def test_a_forged_apply_is_refused(router):
    sent = _move(router, token="not-the-supervisor")
    assert to(sent, "supervisor")[0].error.code is ErrorCode.INVALID_INPUT
    assert router.table.services["echo"].address == "old"


def test_a_weighted_route_splits_by_weight(router):
    _move(router, routes={"echo": {"echo": 3, "b": 1}},
          directory=(_entry("echo", "e-addr", 2), _entry("b", "b-addr", 1)))
    picked = [deliver(router, Task(id=f"t{i}", type="echo"), "caller")[0][0] for i in range(8)]
    assert picked.count("e-addr") == 6 and picked.count("b-addr") == 2
    pinned = deliver(router, Task(id="p", type="echo", metadata={"version": "1"}), "caller")
    assert to(pinned, "caller")[0].error.code is ErrorCode.SERVICE_NOT_FOUND


# -- the service actor: warm-up before online, and the kind's code as it is now on disk --------
KIND = '''
from services.model_service import ModelService

class Kind(ModelService):
    kind = "{name}"
    task_types = frozenset({{"answer"}})
    warmed = 0

    def warmup_inputs(self, max_batch_size):
        return [[self.task(size, i) for i in range(size)] for size in range(1, max_batch_size + 1)]

    def task(self, size, i):
        from messages.task import Task
        return Task(id=f"warm-{{size}}-{{i}}", type="answer", data={fail!r})

    def execute(self, task):
        if task.data == "fail":
            raise ValueError("cannot warm up")
        if task.id.startswith("warm-"):
            type(self).warmed += 1
        return {{"answer": "{answer}", "warmed": type(self).warmed}}
'''


def write_kind(folder: Path, name: str, answer: str, fail: str | None = None) -> str:
    (folder / f"{name}.py").write_text(textwrap.dedent(KIND.format(name=name, answer=answer,
                                                                   fail=fail)))
    return f"{name}:Kind"


@pytest.fixture
def kinds(tmp_path, monkeypatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def service_actor(kind: str, warmup: bool = True, max_batch_size: int = 3) -> ServiceActor:
    from services.model_service import NoSettings
    actor = harness(ServiceActor)
    deliver(actor, ConfigureService(name="svc", kind=kind, settings=NoSettings(), max_queue=8,
                                    max_batch_size=max_batch_size, max_batch_delay_ms=0,
                                    generation=1, default_task_timeout_s=5.0, eager=True,
                                    token="t", warmup=warmup), "supervisor")
    return actor


def answer(actor: ServiceActor) -> Any:
    deliver(actor, Task(id="real", type="answer", data=1), "caller")
    [result] = to(wait_for_worker(actor), "caller")
    return result.unwrap()


def test_warm_up_runs_each_batch_size_before_the_service_is_online(kinds):
    actor = service_actor(write_kind(kinds, "warm_kind", "v1"))
    [status] = to(wait_for_worker(actor), "supervisor")
    assert status.status is S.ONLINE and status.details["warmup_ms"] >= 0
    assert answer(actor) == {"answer": "v1", "warmed": 1 + 2 + 3}
    assert actor.stats.requests == 1  # warm-up tasks are not the service's work
    deliver(actor, ActorExitRequest(), "thespian")


def test_without_warm_up_the_first_task_is_the_first_pass(kinds):
    actor = service_actor(write_kind(kinds, "cold_kind", "v1"), warmup=False)
    [status] = to(wait_for_worker(actor), "supervisor")
    assert status.status is S.ONLINE and "warmup_ms" not in status.details
    assert answer(actor)["warmed"] == 0
    deliver(actor, ActorExitRequest(), "thespian")


def test_a_warm_up_that_fails_fails_the_start(kinds):
    actor = service_actor(write_kind(kinds, "bad_warm_kind", "v1", fail="fail"))
    [status] = to(wait_for_worker(actor), "supervisor")
    assert status.status is S.FAILED and "warm-up failed: ValueError: cannot warm up" in status.error.message
    deliver(actor, ActorExitRequest(), "thespian")


def test_each_new_service_process_imports_its_kinds_code_as_it_is_now(kinds):
    kind = write_kind(kinds, "hot_kind", "v1")
    first = service_actor(kind)
    wait_for_worker(first)
    assert answer(first)["answer"] == "v1"
    time.sleep(0.01)
    write_kind(kinds, "hot_kind", "version-2")  # another size too: no stale bytecode cache
    second = service_actor(kind)
    wait_for_worker(second)
    assert answer(second)["answer"] == "version-2"
    assert answer(first)["answer"] == "v1"  # the running one keeps its code
    for actor in (first, second):
        deliver(actor, ActorExitRequest(), "thespian")


def test_code_that_no_longer_imports_fails_the_start_with_the_reason(kinds):
    kind = write_kind(kinds, "broken_kind", "v1")
    (kinds / "broken_kind.py").write_text("this is not python\n")
    actor = service_actor(kind)
    [status] = to(actor.sent, "supervisor")
    assert status.status is S.FAILED and "could not load its kind" in status.error.message
    deliver(actor, ActorExitRequest(), "thespian")


def test_a_retired_generation_refuses_late_tasks_as_retryable(kinds):
    actor = service_actor(write_kind(kinds, "retire_kind", "v1"))
    wait_for_worker(actor)
    deliver(actor, Shutdown(drain_s=1.0, token="t", retiring=True), "supervisor")
    sent = deliver(actor, ServiceTask(3, Task(id="late", type="answer"), 5.0), "router")
    [done] = to(sent, "router")
    assert isinstance(done, ServiceTaskDone) and is_retryable(done.result.error)
    deliver(actor, ActorExitRequest(), "thespian")
