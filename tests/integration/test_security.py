"""A daemon started from the command line listens on loopback only, the metrics endpoint included."""
from __future__ import annotations

import json
import urllib.request

import pytest

from host.launcher import runtime_processes
from tests.conftest import listening
from tests.integration.test_daemon_cli import cli, stop_and_sweep, write_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

METRIC_NAMES = (
    "grym_requests_total", "grym_task_stage_seconds_bucket", "grym_service_up",
    "grym_service_state", "grym_service_restarts_total", "grym_service_resident_memory_bytes",
    "grym_service_queue_depth", "grym_health_events_total", "grym_context_items",
    "grym_context_bytes", "grym_context_evictions_total", "grym_tasks_in_flight",
)


def test_every_socket_of_a_running_daemon_is_on_loopback(tmp_path):
    config, logs, metrics_port = write_config(tmp_path)
    c = ("--config", str(config))
    try:
        cli("start", *c)
        assert json.loads(cli("submit", "echo", "--data", "1", *c).stdout)["data"] == 1
        body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics",
                                      timeout=10).read().decode()
        for name in METRIC_NAMES:
            assert name in body, name
        processes = runtime_processes(str(logs / "config.json"))  # launcher, admin, actors
        sockets = {p.pid: listening(p) for p in processes}
        found = {s for socks in sockets.values() for s in socks}
        assert len(processes) >= 5 and len(found) >= 5, sockets
        assert {ip for ip, _ in found} == {"127.0.0.1"}, sockets
        admin_port = json.loads((logs / "ready.json").read_text())["admin_port"]
        assert {admin_port, metrics_port} <= {port for _, port in found}
    finally:
        stop_and_sweep(config, logs)
