"""One deadline rule: a host waits as long as the router gives the task, whether it
started the runtime or joined it with ``connect()``."""
from __future__ import annotations

import pytest

from host import ServiceSystem
from messages import Task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_a_services_task_timeout_longer_than_the_system_default_is_honoured(start_system):
    # Each task takes 3 s: past the system default plus the host's reply margin
    # (0.5 + 2 s), within the service's own task_timeout_s.
    system = start_system({"system": {"default_task_timeout_s": 0.5}, "services": {
        "slow": {"kind": "echo", "eager": True, "delay_ms": 3000, "task_timeout_s": 6}}})
    probe = Task(id="probe", type="echo")
    assert system.info.timeout_for(probe) == 6
    result = system.router.route_task(Task(id="started", type="echo", data=1))
    assert result.ok, result.error
    with ServiceSystem.connect(system.admin_port) as joined:
        assert joined.info.timeout_for(probe) == 6
        result = joined.router.route_task(Task(id="joined", type="echo", data=2))
        assert result.ok, result.error
        assert result.data == 2
