"""The supervised runtime on real multiprocTCPBase actor systems."""
from __future__ import annotations

import os
import signal
import threading
import time

import psutil
import pytest

from messages import ErrorCode, Task
from messages.errors import ServiceNotFound, ServiceUnavailable
from messages.service import ServiceStatus
from tests.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def echo(**settings):
    return {"kind": "echo", **settings}


def test_lazy_service_loads_on_first_use(start_system):
    system = start_system({"services": {"lazy": echo(init_delay_ms=50)}})
    assert system.services()[0].status is ServiceStatus.OFFLINE
    service = system.get_service("lazy")
    assert service.get_status() is ServiceStatus.ONLINE
    result = service.execute_task(Task(id="t1", type="echo", data=b"payload"))
    assert result.ok and result.data == b"payload"


def test_first_task_initializes_a_lazy_service(start_system):
    system = start_system({"services": {"echo": echo(init_delay_ms=100)}})
    result = system.router.route_task(Task(id="t1", type="echo", data=[1, 2]))
    assert result.ok, result.error
    assert result.data == [1, 2]
    assert result.metrics.queue_ms >= 90  # it waited for the load
    assert system.services()[0].status is ServiceStatus.ONLINE


def test_route_fills_every_timing_field(start_system):
    system = start_system({"services": {"echo": echo(eager=True, delay_ms=5)}})
    result = system.router.route_task(Task(id="t1", type="echo", data={"k": "v"}))
    assert result.ok
    m = result.metrics
    assert m.execution_ms >= 4.5
    assert m.total_ms >= m.execution_ms + m.queue_ms
    assert m.routing_ms > 0
    assert m.context_fetch_ms > 0  # echo tasks fetch context by default


def test_unknown_task_type_and_service(start_system):
    system = start_system({"services": {"echo": echo(eager=True)}})
    result = system.router.route_task(Task(id="t1", type="no-such-type"))
    assert result.error.code is ErrorCode.INVALID_TASK_TYPE
    with pytest.raises(ServiceNotFound):
        system.get_service("nope")
    # Default routes come from the configured services: no wav2vec2 service, no route.
    assert "speech-to-text" not in system.info.routes
    result = system.router.route_task(Task(id="t2", type="speech-to-text", data=b""))
    assert result.error.code is ErrorCode.INVALID_TASK_TYPE


def test_overload_is_refused_at_once(start_system):
    system = start_system({"services": {"slow": echo(eager=True, delay_ms=300, max_queue=2)},
                           "routes": {"echo": "slow"}})
    results, lock = [], threading.Lock()

    def call(i):
        started = time.monotonic()
        r = system.router.route_task(Task(id=f"t{i}", type="echo", data=i))
        with lock:
            results.append((r, time.monotonic() - started))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refused = [(r, dt) for r, dt in results if not r.ok]
    accepted = [r for r, _ in results if r.ok]
    assert len(accepted) == 2
    assert len(refused) == 4
    assert all(r.error.code is ErrorCode.OVERLOADED for r, _ in refused)
    assert all(dt < 0.25 for _, dt in refused), "refusals must not wait for the slow tasks"
    # The accepted two run one after the other (0.3 s each), unslowed by the refused four.
    assert max(dt for r, dt in results if r.ok) < 0.9


def test_failing_task_runs_exactly_once(start_system):
    system = start_system({"services": {"echo": echo(eager=True)}})
    result = system.router.route_task(Task(id="t1", type="echo", metadata={"inject": "fail"}))
    assert result.error.code is ErrorCode.EXECUTION_ERROR
    assert "injected failure" in result.error.message
    metrics = system.metrics("echo")[0]
    assert (metrics.requests, metrics.errors) == (1, 1)
    assert system.router.route_task(Task(id="t2", type="echo", data=2)).ok


def test_kill_9_is_recovered(start_system):
    system = start_system({"services": {"echo": echo(eager=True)}})
    events = []
    system.health.on("service_restarted", events.append)
    before = system.services()[0]
    os.kill(before.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    result = wait_until(lambda: (r := system.router.route_task(
        Task(id="after", type="echo", data=1))).ok and r, timeout=5)
    assert result.data == 1
    back_in = time.monotonic() - killed_at
    after = system.services()[0]
    assert after.pid != before.pid and after.generation == before.generation + 1
    assert after.restarts == 1
    wait_until(lambda: events, timeout=2)
    assert events[0].service == "echo"
    assert back_in < 2.0


def test_crash_during_a_task_is_answered_and_recovered(start_system):
    system = start_system({"services": {"echo": echo(eager=True)}})
    started = time.monotonic()
    result = system.router.route_task(Task(id="boom", type="echo", metadata={"inject": "crash"},
                                           timeout_s=20))
    assert result.error.code is ErrorCode.EXECUTION_ERROR
    assert time.monotonic() - started < 5, "a crash must be answered when noticed, not at the deadline"
    wait_until(lambda: system.router.route_task(Task(id="next", type="echo", data=3)).ok, timeout=5)


def test_hung_service_is_killed_and_restarted(start_system):
    system = start_system({"services": {"echo": echo(eager=True)},
                           "health": {"heartbeat_interval_s": 0.1, "hang_grace_s": 0.2}})
    pid = system.services()[0].pid
    result = system.router.route_task(Task(id="stuck", type="echo", metadata={"inject": "hang"},
                                           timeout_s=0.5))
    assert result.error.code is ErrorCode.TIMEOUT
    wait_until(lambda: system.services()[0].pid not in (None, pid), timeout=5)
    wait_until(lambda: system.router.route_task(Task(id="next", type="echo", data=1)).ok, timeout=5)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_transient_service_that_ends_normally_is_not_restarted(start_system):
    system = start_system({"services": {"once": echo(eager=True, restart="transient")}})
    stopped = []
    system.health.on("service_stopped", stopped.append)
    pid = system.services()[0].pid
    result = system.router.route_task(Task(id="last", type="echo", data=1,
                                           metadata={"inject": "exit"}))
    assert result.ok and result.data == 1  # answered, then the service ends normally
    wait_until(lambda: stopped, timeout=5)
    info = system.services()[0]
    assert (info.status, info.restarts, info.pid) == (ServiceStatus.STOPPED, 0, None)
    wait_until(lambda: not psutil.pid_exists(pid)
               or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, timeout=5)
    after = system.router.route_task(Task(id="next", type="echo", data=2))
    assert after.error.code is ErrorCode.SERVICE_UNAVAILABLE
    time.sleep(0.5)  # a restart, were there one, would have happened by now
    assert system.services()[0].status is ServiceStatus.STOPPED


def test_restart_limit_marks_the_service_failed(start_system):
    system = start_system({
        "services": {
            "broken": echo(eager=True, fail_init=True, max_restarts=2, restart_period_s=30,
                           backoff_initial_s=0.01),
            "fine": echo(eager=True),
        },
        "routes": {"echo": "broken", "ping": "fine"},
    })
    wait_until(lambda: system.health.statuses()["broken"] is ServiceStatus.FAILED, timeout=10)
    info = {s.name: s for s in system.services()}
    assert info["broken"].restarts == 2
    assert "failed to initialize" in info["broken"].last_error
    started = time.monotonic()
    result = system.router.route_task(Task(id="t1", type="echo"))
    assert result.error.code is ErrorCode.SERVICE_UNAVAILABLE
    assert time.monotonic() - started < 0.5
    with pytest.raises(ServiceUnavailable):
        system.get_service("broken")
    kinds = [e.kind.value for e in system.health.events() if e.service == "broken"]
    assert kinds.count("service_restarted") == 2 and kinds[-1] == "service_failed"
    assert info["fine"].status is ServiceStatus.ONLINE and info["fine"].restarts == 0


def test_eight_threads_at_once(start_system):
    system = start_system({"services": {"echo": echo(eager=True)}})
    service = system.get_service("echo")
    errors, counts = [], [0] * 8

    def worker(n):
        for i in range(40):
            task_id = f"w{n}-{i}"
            call = service.execute_task if i % 2 else system.router.route_task
            result = call(Task(id=task_id, type="echo", data=task_id))
            if not result.ok or result.data != task_id or result.task_id != task_id:
                errors.append(result)
            counts[n] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert counts == [40] * 8


def test_junk_messages_get_typed_errors(start_system):
    system = start_system({"services": {"echo": echo(eager=True)}})
    from messages.errors import InvalidInput
    for junk in ("status", 42, {"type": "echo"}, [1, 2]):
        with pytest.raises(InvalidInput):
            system.ask(system.info.router, junk, 5)
    assert system.router.route_task(Task(id="t", type="echo", data=1)).ok


def test_spawn_start_method_for_cuda_deployments(start_system):
    # CUDA cannot start in a forked process; spawn starts each actor in a fresh interpreter.
    system = start_system({"system": {"start_method": "spawn"},
                           "services": {"echo": {"kind": "echo", "eager": True}}})
    assert system.router.route_task(Task(id="t", type="echo", data=1)).unwrap() == 1
    pid = system.services()[0].pid
    # A fresh interpreter, not a fork of the launcher (which would share its command line).
    assert psutil.Process(pid).cmdline() != psutil.Process(system.launcher_pid).cmdline()
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: system.router.route_task(Task(id="again", type="echo", data=2)).ok,
               timeout=15)
