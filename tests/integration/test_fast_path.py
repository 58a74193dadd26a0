"""The host's fast path (host/direct.py): tasks go straight to their service and keep
every guarantee the router gave them: one answer, typed errors, the deadline rule, a
lost service answered when it is lost, the router's metrics, the task history."""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from messages import ErrorCode, Task
from messages.context import ContextFilter
from messages.system import GetRouterMetrics
from tests.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def echo(**settings):
    return {"kind": "echo", "eager": True, **settings}


def direct(system, call):
    """``call()``'s result, checking that it went straight to the service."""
    before = system._direct.sent
    result = call()
    assert system._direct.sent == before + 1, "the task went through the router"
    return result


def router_requests(system) -> dict:
    return system.ask(system.info.router, GetRouterMetrics(), 5).requests


def test_tasks_go_straight_to_the_service_with_the_routers_timings_and_metrics(start_system):
    system = start_system({"services": {"echo": echo(fetch_context=False)}})
    assert system._direct.replica.ready
    result = direct(system, lambda: system.router.route_task(Task(id="t1", type="echo", data=[1])))
    assert result.ok and result.data == [1]
    m = result.metrics
    assert m.total_ms >= m.queue_ms + m.execution_ms and m.routing_ms > 0
    handle = system.get_service("echo")
    assert direct(system, lambda: handle.execute_task(Task(id="t2", type="x", data=2))).data == 2
    # counted by the router, which serves every task's metrics
    wait_until(lambda: router_requests(system).get(("echo", "echo", "ok"), 0) >= 1, timeout=3)
    # what the router refuses is still refused, by the router, with its typed error
    assert system.router.route_task(Task(id="t3", type="nope")).error.code \
        is ErrorCode.INVALID_TASK_TYPE


def test_a_crash_during_a_direct_task_is_answered_when_noticed(start_system):
    system = start_system({"services": {"echo": echo(fetch_context=False)}})
    started = time.monotonic()
    result = direct(system, lambda: system.router.route_task(
        Task(id="boom", type="echo", metadata={"inject": "crash"}, timeout_s=20)))
    assert result.error.code is ErrorCode.EXECUTION_ERROR, result.error
    assert "while running task 'boom'" in result.error.message
    assert time.monotonic() - started < 5, "answered at the deadline, not when the service was lost"
    # the replica learns the new generation's address: the next tasks go direct again
    wait_until(lambda: system.router.route_task(Task(id="next", type="echo", data=3)).ok,
               timeout=5)
    assert direct(system, lambda: system.router.route_task(Task(id="n2", type="echo"))).ok


def test_the_deadline_rule_holds_on_the_direct_path(start_system):
    # A hang past the 2 s asserted below, but not past the teardown's drain: a service
    # hung through a shutdown costs the shutdown budget (5 s), which
    # tests/unit/test_supervisor_shell.py checks.
    system = start_system({"services": {"echo": echo(fetch_context=False, hang_s=2.5)}})
    started = time.monotonic()
    result = direct(system, lambda: system.router.route_task(
        Task(id="slow", type="echo", metadata={"inject": "hang"}, timeout_s=0.3)))
    assert result.error.code is ErrorCode.TIMEOUT
    assert time.monotonic() - started < 2.0  # the service's answer, not the host's margin


def test_kill_9_under_direct_load_every_call_is_answered(start_system):
    system = start_system({"services": {"echo": echo(fetch_context=False)}})
    stop, results = threading.Event(), []

    def caller(n):
        i = 0
        while not stop.is_set():
            i += 1
            results.append(system.router.route_task(Task(id=f"c{n}-{i}", type="echo", data=i,
                                                         timeout_s=2)))

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    os.kill(system.services()[0].pid, signal.SIGKILL)
    killed = time.monotonic()
    wait_until(lambda: system.router.route_task(Task(id="p", type="echo", timeout_s=1)).ok,
               timeout=5, interval=0.05)
    back_in = time.monotonic() - killed
    time.sleep(0.3)
    stop.set()
    for t in threads:
        t.join(10)
    codes = {r.error.code for r in results if not r.ok}
    assert codes <= {ErrorCode.EXECUTION_ERROR, ErrorCode.SERVICE_UNAVAILABLE}, codes
    assert sum(r.ok for r in results) > 10 and back_in < 1.5
    assert system._direct.sent > len(results) // 2


def test_task_history_is_stored_for_direct_tasks(start_system):
    system = start_system({"services": {"echo": echo(fetch_context=False)}})
    assert direct(system, lambda: system.router.route_task(
        Task(id="kept", type="echo", data={"a": 1}, store_results=True))).ok
    found = wait_until(lambda: system.context.query(
        ContextFilter(types=frozenset({"task_history"}), task_id="kept")).items, timeout=3)
    assert found[0].content["result"] == {"a": 1} and found[0].source == "echo"
