"""Another process joins with its own actor; every socket stays on loopback."""
from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

import psutil
import pytest

from messages import Task
from host.launcher import project_env
from host.system import ServiceSystem
from tests.conftest import listening

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_a_separate_process_with_its_own_actor(start_system):
    system = start_system({"services": {"echo": {"kind": "echo", "eager": True}}})
    port = system.admin_port
    out = subprocess.run([sys.executable, "-m", "tests.integration.external_client", str(port),
                          str(system.secret_file)],
                         capture_output=True, text=True, timeout=60, env=project_env())
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    results = {r["task_id"]: r for r in got["results"]}
    assert results["ext-1"]["ok"] and results["ext-1"]["data"] == {"from": "outside"}
    assert results["ext-2"]["code"] == "INVALID_TASK_TYPE"
    assert system.context.retrieve(got["acks"][0]).source == "external"


def test_connect_joins_without_owning(start_system):
    system = start_system({"services": {"echo": {"kind": "echo", "eager": True}}})
    with ServiceSystem.connect(system.admin_port, secret_file=system.secret_file) as joined:
        assert joined.router.route_task(Task(id="j", type="echo", data=1)).unwrap() == 1
    # Leaving the joined handle leaves the runtime running.
    assert system.router.route_task(Task(id="k", type="echo", data=2)).ok


def test_every_listening_socket_is_on_loopback(start_system):
    system = start_system({"services": {"echo": {"kind": "echo", "eager": True}},
                           "metrics": {"enabled": True}})
    system.router.route_task(Task(id="t", type="echo", data=1))
    metrics_port = system.admin_port + 1
    body = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read()
    assert b"grym_requests_total" in body
    sockets = {}
    for proc in system.processes() + [psutil.Process()]:  # the runtime and this host
        sockets[proc.pid] = listening(proc)
    found = [s for socks in sockets.values() for s in socks]
    assert len(found) >= 6, sockets  # admin, each actor, the host's endpoint, metrics
    assert {ip for ip, _ in found} == {"127.0.0.1"}, sockets
    assert any(port == metrics_port for _, port in found)
