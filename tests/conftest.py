"""Shared fixtures: a free admin port per test, and a runtime that must leave nothing behind."""
from __future__ import annotations

import socket
import time
from typing import Any, Callable, Iterator

import psutil
import pytest

from supervisor import ServiceSystem


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


@pytest.fixture
def start_system() -> Iterator[Callable[..., ServiceSystem]]:
    """Start a runtime on its own port; after the test, shut it down and check
    that no process of it (launcher, admin, actors) is still alive."""
    started: list[tuple[ServiceSystem, list[psutil.Process]]] = []

    def start(config: dict[str, Any]) -> ServiceSystem:
        config = {**config, "system": {**config.get("system", {}), "admin_port": free_port()}}
        system = ServiceSystem.start(config)
        launcher = system._launcher
        started.append((system, [psutil.Process(launcher.pid)]))
        return system

    yield start
    leftovers = []
    for system, processes in started:
        tree = processes + descendants(processes[0].pid)
        system.shutdown(drain_s=2.0)
        gone, alive = psutil.wait_procs(tree, timeout=10)
        leftovers += [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        for p in alive:
            p.kill()
    assert not leftovers, f"processes left behind: {leftovers}"
