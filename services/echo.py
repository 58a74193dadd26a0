"""The built-in ``echo`` service: answers with its input.

It exists for tests, benchmarks and demos, so it can also misbehave on
purpose. A fault is injected for every task by the ``inject`` setting, or for
one task by ``metadata={"inject": ...}``:

- ``fail``: raise, answered as EXECUTION_ERROR
- ``hang``: block the worker for ``hang_s`` (the supervisor kills the process)
- ``crash``: the process dies at once (as ``kill -9`` would do it)
- ``leak``: keep ``leak_bytes`` more memory alive, then answer normally
- ``exit``: answer normally, then end the service normally (``request_stop``)
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Any

from messages.errors import ExecutionError, InitError
from messages.task import Task
from messages.validation import check, is_int, is_number

from .model_service import ModelService

FAULTS = ("fail", "hang", "crash", "leak", "exit")


@dataclass(frozen=True)
class EchoSettings:
    delay_ms: float = 0.0        # time each task takes
    init_delay_ms: float = 0.0   # time initialize() takes (a model load, pretended)
    fail_init: bool = False      # initialize() raises: a restart storm
    crash_on_init: bool = False  # the process dies in initialize()
    inject: str | None = None    # a fault for every task, see the module doc
    hang_s: float = 3600.0
    leak_bytes: int = 1 << 20

    def __post_init__(self) -> None:
        check(is_number(self.delay_ms) and self.delay_ms >= 0, "delay_ms", "must be >= 0")
        check(is_number(self.init_delay_ms) and self.init_delay_ms >= 0, "init_delay_ms",
              "must be >= 0")
        check(isinstance(self.fail_init, bool), "fail_init", "must be true or false")
        check(isinstance(self.crash_on_init, bool), "crash_on_init", "must be true or false")
        check(self.inject is None or self.inject in FAULTS, "inject",
              f"must be one of {', '.join(FAULTS)}")
        check(is_number(self.hang_s) and self.hang_s > 0, "hang_s", "must be > 0")
        check(is_int(self.leak_bytes) and self.leak_bytes > 0, "leak_bytes",
              "must be a positive integer")


class EchoService(ModelService):
    kind = "echo"
    task_types = frozenset({"echo"})  # its default route; it echoes any type routed to it
    Settings = EchoSettings

    def __init__(self, name: str, settings: EchoSettings, **runtime: Any):
        super().__init__(name, settings, **runtime)
        self._leaked: list[bytearray] = []

    def check_task(self, task: Task) -> None:
        """Any task type: ``[routes]`` may send it whatever a test needs echoed."""

    def initialize(self) -> None:
        s = self.settings
        if s.init_delay_ms:
            time.sleep(s.init_delay_ms / 1000)
        if s.crash_on_init:
            os.kill(os.getpid(), signal.SIGKILL)
        if s.fail_init:
            raise InitError(f"service {self.name!r} was configured to fail on start")
        super().initialize()

    def execute(self, task: Task) -> Any:
        fault = task.metadata.get("inject", self.settings.inject)
        if fault == "fail":
            raise ExecutionError(f"injected failure in task {task.id!r}")
        if fault == "hang":
            time.sleep(self.settings.hang_s)
        elif fault == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        elif fault == "leak":
            self._leaked.append(bytearray(self.settings.leak_bytes))
        elif fault == "exit":
            self.request_stop(f"task {task.id!r} asked the service to end")
        if self.settings.delay_ms:
            time.sleep(self.settings.delay_ms / 1000)
        return task.data

    def shutdown(self) -> None:
        self._leaked.clear()
        super().shutdown()
