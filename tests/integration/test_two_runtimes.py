"""Two runtimes embedded in two processes of one machine, neither naming a port."""
from __future__ import annotations

import json
import subprocess
import sys

import psutil
import pytest

from host.launcher import end_processes, project_env
from host.system import ServiceSystem
from messages import Task

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def test_two_hosts_start_a_runtime_each_without_a_port():
    hosts = [subprocess.Popen([sys.executable, "-m", "tests.integration.embedded_host"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              env=project_env()) for _ in range(2)]
    pids: list[int] = []
    try:
        # Started at the same time: each picks a free port of its own.
        ready = [json.loads(host.stdout.readline() or "{}") for host in hosts]
        assert all(r.get("answer") == "hello" for r in ready), ready
        pids = [pid for r in ready for pid in r["pids"]]
        ports = [r["admin_port"] for r in ready]
        assert ports[0] != ports[1] and 19500 not in ports, ports
        assert [r["info_port"] for r in ready] == ports  # SystemInfo says it too
        for port in ports:  # both are up at once, and both serve
            with ServiceSystem.connect(port) as joined:
                assert joined.router.route_task(Task(id=f"j{port}", type="echo",
                                                     data=port)).unwrap() == port
    finally:
        for host in hosts:
            if host.poll() is None:
                host.stdin.write("\n")
                host.stdin.flush()
        for host in hosts:
            assert host.wait(60) == 0
    procs = []
    for pid in pids:
        try:
            procs.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            pass
    assert end_processes(procs, timeout_s=10) == []  # ended (a zombie has), none killed
