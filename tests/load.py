"""Callers that route tasks from threads of their own until stopped: the load of the
chaos and scaling tests, with what each call got and when."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from messages import Task, TaskResult


@dataclass(frozen=True)
class Call:
    began: float      # time.monotonic()
    ended: float
    result: TaskResult

    @property
    def took(self) -> float:
        return self.ended - self.began


class Callers:
    """``with Callers(system, n, timeout_s=2) as load: ...``; ``load.calls`` after."""

    def __init__(self, system, callers: int, task_type: str = "echo",
                 timeout_s: float | None = None, pause_s: float = 0.0):
        self.system, self.task_type = system, task_type
        self.timeout_s, self.pause_s = timeout_s, pause_s
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(callers)]

    def __enter__(self) -> "Callers":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def _run(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            began = time.monotonic()
            result = self.system.router.route_task(Task(
                id=f"c{n}-{i}", type=self.task_type, data=i, timeout_s=self.timeout_s))
            with self._lock:
                self.calls.append(Call(began, time.monotonic(), result))
            if self.pause_s:
                time.sleep(self.pause_s)

    def failed(self) -> list[TaskResult]:
        return [c.result for c in self.calls if not c.result.ok]
