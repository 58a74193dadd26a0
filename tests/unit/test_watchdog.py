"""systemd's watchdog: WATCHDOG=1 only while the supervisor answers, or while it is restarted."""
from __future__ import annotations

import contextlib
import os
import socket
import time

import pytest

from host import watchdog
from host.watchdog import SupervisorWatchdog, watchdog_interval_s
from messages.system import SystemInfo

INFO = SystemInfo(supervisor="sup", router=None, context=None, services=(), default_task_timeout_s=30)


class FakeSystem:
    """An actor system whose endpoints answer the ping with ``reply``."""

    def __init__(self, reply):
        self.reply = reply

    @contextlib.contextmanager
    def private(self):
        outer = self

        class Endpoint:
            def ask(self, address, msg, timeout):
                return outer.reply
        yield Endpoint()


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    yield sock
    sock.close()


def received(sock, within_s: float = 0.5) -> list[str]:
    """The datagrams that arrive within ``within_s``."""
    got, deadline = [], time.monotonic() + within_s
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        with contextlib.suppress(socket.timeout):
            got.append(sock.recv(100).decode())
    return got


def test_interval_is_half_the_period_and_only_for_this_process():
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None


def test_keep_alive_while_the_supervisor_answers(notify_socket):
    dog = SupervisorWatchdog(FakeSystem(INFO), INFO, interval_s=0.02)
    dog._thread.start()
    try:
        assert "WATCHDOG=1" in received(notify_socket)
    finally:
        dog.stop()


def test_no_keep_alive_from_a_silent_supervisor_unless_it_is_being_restarted(notify_socket):
    dog = SupervisorWatchdog(FakeSystem(None), INFO, interval_s=0.02)
    dog._thread.start()
    try:
        assert received(notify_socket, 0.2) == []
        dog.restarting()
        assert "WATCHDOG=1" in received(notify_socket)
        dog.retarget(FakeSystem(None), INFO)  # restarted, and silent again
        received(notify_socket, 0.05)
        assert received(notify_socket, 0.2) == []
    finally:
        dog.stop()


def test_notify_without_systemd_is_a_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    watchdog.notify("WATCHDOG=1")  # nothing to send to, nothing raised
