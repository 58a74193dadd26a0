"""systemd's watchdog and status lines for the daemon's launcher.

With ``WatchdogSec=`` in the unit, systemd sets ``WATCHDOG_USEC`` and kills the
service when ``WATCHDOG=1`` stops coming. The launcher process itself rarely
hangs; what can is the supervisor, so the keep-alive is sent only while the
supervisor answers an ask (from a thread and endpoint of its own, so the
launcher's watch loop never waits on it). While the launcher is restarting a
dead supervisor the keep-alive goes on: that restart is the launcher doing its
job, and it ends in a running runtime or in the launcher's exit.
"""
from __future__ import annotations

import os
import socket
import threading
from typing import Any

from messages.system import GetSystemInfo, SystemInfo
from runtime.logs import host_logger

log = host_logger()
PING_TIMEOUT_S = 5.0


def notify(state: str) -> None:
    """sd_notify without a dependency: one datagram to $NOTIFY_SOCKET (Type=notify units)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state.encode(), path)
    except OSError as exc:  # systemd gone or the socket unreachable: never fatal
        log.warning("sd_notify_failed", state=state.split("=")[0], error=str(exc))


def watchdog_interval_s(environ: dict[str, str] | None = None) -> float | None:
    """Half of systemd's watchdog period (its own advice), or None when it is off
    or meant for another process (``WATCHDOG_PID``)."""
    env = os.environ if environ is None else environ
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2e6


class SupervisorWatchdog:
    """Sends ``WATCHDOG=1`` every interval while the supervisor answers."""

    def __init__(self, asys: Any, info: SystemInfo, interval_s: float):
        self.interval_s = interval_s
        self._target = (asys, info)
        self._restarting = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grym-watchdog", daemon=True)

    @classmethod
    def start_if_asked(cls, asys: Any, info: SystemInfo) -> "SupervisorWatchdog | None":
        interval = watchdog_interval_s()
        if interval is None:
            return None
        watchdog = cls(asys, info, interval)
        watchdog._thread.start()
        return watchdog

    def retarget(self, asys: Any, info: SystemInfo) -> None:
        self._target, self._restarting = (asys, info), False

    def restarting(self) -> None:
        self._restarting = True

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(PING_TIMEOUT_S + 1)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            if self._restarting or self._supervisor_answers():
                notify("WATCHDOG=1")
            else:
                log.warning("watchdog_withheld", reason="the supervisor did not answer")

    def _supervisor_answers(self) -> bool:
        asys, info = self._target
        try:
            with asys.private() as endpoint:
                reply = endpoint.ask(info.supervisor, GetSystemInfo(), PING_TIMEOUT_S)
        except Exception:  # noqa: BLE001 - an admin in a bad way: no keep-alive
            return False
        return isinstance(reply, SystemInfo)
