"""systemd's watchdog against a real daemon: WATCHDOG=1 only while the supervisor answers."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from host.launcher import project_env
from host.system import ServiceSystem
from tests.integration.test_daemon_cli import stop_and_sweep, write_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def datagrams(sock: socket.socket, within_s: float, until: str | None = None) -> list[str]:
    """What arrives within ``within_s``; with ``until``, only up to the first ``until``."""
    got, deadline = [], time.monotonic() + within_s
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(1000).decode())
        except socket.timeout:
            break
        if got[-1] == until:
            break
    return got


def test_keep_alive_stops_while_the_supervisor_is_frozen(tmp_path):
    config, logs, _ = write_config(tmp_path)
    notify_path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify_path)
    env = {**project_env(), "NOTIFY_SOCKET": notify_path, "WATCHDOG_USEC": "400000"}
    daemon = subprocess.Popen([sys.executable, "run.py", "serve", "--config", str(config)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    supervisor_pid = None
    try:
        sock.settimeout(60.0)
        first = sock.recv(1000).decode()  # the launcher's first word: ready, and what it serves
        assert first.startswith("READY=1") and "STATUS=serving 1 service" in first
        assert "WATCHDOG=1" in datagrams(sock, 2.0, until="WATCHDOG=1")

        port = int(next(line.split("=")[1] for line in config.read_text().splitlines()
                        if line.startswith("admin_port")))
        with ServiceSystem.connect(port, secret_file=logs / "secret.key") as joined:
            supervisor_pid = joined.info.pid
        os.kill(supervisor_pid, signal.SIGSTOP)  # hung, not dead: only the watchdog can tell
        datagrams(sock, 0.5)                     # one ping may have been answered just before
        frozen = datagrams(sock, 3.0)
        print(f"datagrams while the supervisor was frozen: {frozen}")
        assert "WATCHDOG=1" not in frozen
        os.kill(supervisor_pid, signal.SIGCONT)
        supervisor_pid = None
        assert "WATCHDOG=1" in datagrams(sock, 8.0, until="WATCHDOG=1")
    finally:
        if supervisor_pid is not None:
            os.kill(supervisor_pid, signal.SIGCONT)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(60)
        except subprocess.TimeoutExpired:
            daemon.kill()
        sock.close()
        stop_and_sweep(config, logs)
