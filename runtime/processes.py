"""Which processes belong to one runtime, and ending all of them.

Thespian daemonizes its admin (setsid and a double fork), so the actor
processes are nobody's children that a launcher could wait for. Whoever starts
a launcher gives it an environment variable naming that runtime
(``RUNTIME_ID``, its config file); every process forked or spawned from it
inherits the variable, and is found by it.
"""
from __future__ import annotations

import os
import signal
import threading

import psutil

RUNTIME_ID = "GRYM_RUNTIME_ID"


def runtime_processes(marker: str) -> list[psutil.Process]:
    """Every process of the runtime named ``marker`` (this one left out)."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(RUNTIME_ID) == marker:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def end_runtime() -> None:
    """Kill every process of this process's runtime, then this one (an actor of a
    runtime whose launcher is gone). Without a marker: this process's parent (the
    admin) and this one."""
    marker = os.environ.get(RUNTIME_ID)
    others = runtime_processes(marker) if marker else [psutil.Process(os.getppid())]
    for proc in others:
        try:
            proc.kill()
        except psutil.Error:
            pass
    os.kill(os.getpid(), signal.SIGKILL)


def exit_within(seconds: float) -> None:
    """End this process in ``seconds`` unless it has ended by then. For an actor told
    to exit once its work is done: Thespian's exit first waits for every pending send,
    and one to a process that died before its transport connected is retried for up to
    its 5-minute transmit period, holding the admin's shutdown (and the launcher) with it."""
    timer = threading.Timer(seconds, os._exit, args=(0,))
    timer.daemon = True
    timer.start()
