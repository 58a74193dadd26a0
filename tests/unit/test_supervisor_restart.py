"""The supervisor's side of issue 12, in one process: a failed service restarted by
request (OTP restart_child), a host that joins while the runtime starts, the launcher
told of a requested stop, and a runtime that ends itself when its launcher is gone."""
from __future__ import annotations

from thespian.actors import ActorExitRequest

import supervisor.actor as supervisor_module
from messages.errors import ErrorCode
from messages.service import ConfigureService, StatusReply
from messages.system import (
    GetSystemInfo, HealthEventKind, RestartService, Routes, ShutdownSystem, SystemInfo,
    SystemStopping,
)
from supervisor.restart_policy import RestartPolicy
from supervisor.config import RestartSettings
from tests.unit.actor_harness import to
from tests.unit.test_supervisor_shell import (  # noqa: F401 - make is a fixture
    HOST, SERVICE_CLASS, S, crashes, echo, make, online,
)

E = HealthEventKind


def failed(sup, name: str = "echo") -> None:
    for _ in range(2):  # max_restarts=1: the second crash in the window fails it
        crashes(sup, name)
    assert sup.actor.services[name].status is S.FAILED


def test_a_failed_service_comes_back_by_request_with_a_fresh_window(make):
    sup = make({"echo": echo(max_restarts=1)})
    online(sup)
    failed(sup)
    sent = sup.deliver(RestartService("echo"), HOST)
    assert sup.created.count(SERVICE_CLASS) == 3
    [event] = sup.events(sent)
    assert event.kind is E.SERVICE_RESTARTED and "restarted by request" in event.reason
    assert "process exited" in event.reason  # the error it failed with
    [setup] = [m for m in to(sent, sup.address("echo")) if isinstance(m, ConfigureService)]
    assert setup.eager, "it loads at once: a caller waits for it"
    assert to(sent, HOST) == []  # answered once it is online
    up = sup.deliver(StatusReply(name="echo", status=S.ONLINE, pid=4343, initialized=True),
                     sup.address("echo"))
    [info] = to(up, HOST)
    assert info.status is S.ONLINE and info.last_error  # status still shows what it failed with
    crashes(sup)  # a fresh window: one more crash is restarted, not a failure
    assert sup.actor.services["echo"].status is not S.FAILED
    assert sup.created.count(SERVICE_CLASS) == 4


def test_a_running_or_unknown_service_is_refused(make):
    sup = make({"echo": echo()})
    online(sup)
    [(_, running)] = sup.deliver(RestartService("echo"), HOST)
    assert running.error.code is ErrorCode.CONFLICT and "online" in running.error.message
    [(_, unknown)] = sup.deliver(RestartService("nope"), HOST)
    assert unknown.error.code is ErrorCode.SERVICE_NOT_FOUND
    assert sup.created.count(SERVICE_CLASS) == 1


def test_restart_by_request_clears_the_window_and_counts():
    policy = RestartPolicy(RestartSettings(max_restarts=1, restart_period_s=60))
    assert policy.on_exit(0.0, abnormal=True).restart
    assert not policy.on_exit(1.0, abnormal=True).restart
    policy.restart_by_request()
    assert policy.on_exit(2.0, abnormal=True).restart
    assert policy.total_restarts == 3


def test_a_host_that_joins_while_the_runtime_starts_is_answered_when_it_is_ready(make):
    sup = make({"echo": echo(eager=True)})
    assert sup.deliver(GetSystemInfo(), "joiner") == []  # not ready: the echo is still loading
    probe = sup.deliver(StatusReply(name="echo", status=S.ONLINE, pid=1, initialized=True),
                        sup.address("echo"))
    assert to(probe, sup.address("router"))  # GetRoutes: the ready probe
    ready = sup.deliver(Routes({"echo": "echo"}, ("echo",)), sup.address("router"))
    [for_launcher], [for_joiner] = to(ready, HOST), to(ready, "joiner")
    assert isinstance(for_joiner, SystemInfo) and for_joiner.incarnation
    assert for_joiner.incarnation == for_launcher.incarnation
    [(_, later)] = sup.deliver(GetSystemInfo(), "later")
    assert later.incarnation == for_joiner.incarnation and later.admin_pid is not None


def test_the_launcher_hears_of_a_stop_that_someone_else_asked_for(make):
    sup = make({"echo": echo()})
    stop = sup.deliver(ShutdownSystem(drain_s=1.0), "run.py stop")
    assert [type(m) for m in to(stop, HOST)] == [SystemStopping]
    other = make({"echo": echo()})
    own = other.deliver(ShutdownSystem(drain_s=1.0), HOST)  # the launcher's own stop
    assert not [m for m in to(own, HOST) if isinstance(m, SystemStopping)]
    third = make({"echo": echo()})
    ended = third.deliver(ActorExitRequest(), "admin")  # the admin is shut down directly
    assert [type(m) for m in to(ended, HOST)] == [SystemStopping]


def test_a_runtime_whose_launcher_is_gone_ends_itself(make, monkeypatch):
    sup = make({"echo": echo()})
    online(sup)
    ended = []
    monkeypatch.setattr(supervisor_module, "end_runtime", lambda: ended.append(True))
    sup.actor.launcher_pid = 777
    sup.tick()
    assert ended == [] and sup.killed == []
    monkeypatch.setattr(supervisor_module, "process_gone", lambda pid: pid == 777)
    sup.tick()
    assert ended == [True] and 4242 in sup.killed
