"""Shared fixtures: a free admin port per test, and a runtime that must leave nothing behind."""
from __future__ import annotations

import socket
import time
from typing import Any, Callable, Iterator

import psutil
import pytest

from host import ServiceSystem
from host.launcher import end_processes


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


def _systems() -> Iterator[Callable[..., ServiceSystem]]:
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
        # A zombie has ended: waiting for it to be reaped (psutil.wait_procs) waited for
        # whoever adopted it, about 1.5 s a test where PID 1 reaps in batches.
        leftovers += end_processes(processes, timeout_s=10)
    assert not leftovers, f"processes left behind: {leftovers}"


@pytest.fixture
def start_system() -> Iterator[Callable[..., ServiceSystem]]:
    """Start a runtime (on a free port, which it picks); after the test, shut it
    down and check that no process of it (launcher, admin, actors) is still alive."""
    yield from _systems()


@pytest.fixture(scope="module")
def start_module_system() -> Iterator[Callable[..., ServiceSystem]]:
    """``start_system`` for a runtime that several tests of a module share (each
    test leaves it as it found it): shut down and checked after the module."""
    yield from _systems()
