"""Health states from error rate and memory, and the events subscribers receive."""
from __future__ import annotations

import pytest

from messages import Task
from messages.service import ServiceStatus
from tests.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]
FAST_HEALTH = {"heartbeat_interval_s": 0.05, "degrade_min_requests": 10,
               "degrade_error_rate": 0.5}


def test_error_rate_degrades_then_recovers(start_system):
    system = start_system({"services": {"echo": {"kind": "echo", "eager": True}},
                           "health": FAST_HEALTH})
    degraded, recovered = [], []
    system.health.on("service_degraded", degraded.append)
    system.health.on("service_recovered", recovered.append)
    for i in range(12):
        system.router.route_task(Task(id=f"f{i}", type="echo", metadata={"inject": "fail"}))
    wait_until(lambda: degraded, timeout=5)
    assert "error rate" in degraded[0].reason
    assert system.health.statuses()["echo"] is ServiceStatus.DEGRADED
    # A degraded service still serves; good answers bring the rate back down.
    for i in range(100):
        assert system.router.route_task(Task(id=f"ok{i}", type="echo", data=i)).ok
    wait_until(lambda: recovered, timeout=5)
    assert system.health.statuses()["echo"] is ServiceStatus.ONLINE


def test_memory_above_the_limit_degrades(start_system):
    system = start_system({"services": {"echo": {"kind": "echo", "eager": True,
                                                 "max_memory": "400MB",
                                                 "leak_bytes": 50 << 20}},
                           "health": FAST_HEALTH})
    for i in range(8):  # 8 x 50 MB on top of the process itself
        assert system.router.route_task(Task(id=f"l{i}", type="echo",
                                             metadata={"inject": "leak"})).ok
    wait_until(lambda: [e for e in system.health.events()
                        if e.kind.value == "service_degraded" and "memory" in e.reason], timeout=5)
