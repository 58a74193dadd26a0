"""Shared fixtures: a free admin port per test, and a runtime that must leave nothing behind."""
from __future__ import annotations

import socket
import time
from typing import Any, Callable, Iterator

import psutil
import pytest

from host import ServiceSystem


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def listening(proc: psutil.Process) -> list[tuple[str, int]]:
    """(address, port) of every socket ``proc`` listens on."""
    try:
        return [(c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN]
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
    """Start a runtime (on a free port, which it picks); after the test, shut it
    down and check that no process of it (launcher, admin, actors) is still alive."""
    started: list[ServiceSystem] = []

    def start(config: dict[str, Any]) -> ServiceSystem:
        system = ServiceSystem.start(config)
        started.append(system)
        assert len(system.processes()) >= 4, "launcher, admin, supervisor and children"
        return system

    yield start
    leftovers = []
    for system in started:
        processes = system.processes()
        system.shutdown(drain_s=2.0)
        _, alive = psutil.wait_procs(processes, timeout=10)
        leftovers += [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
        for p in alive:
            p.kill()
    assert not leftovers, f"processes left behind: {leftovers}"
