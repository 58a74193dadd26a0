"""One thread that runs a model's calls, and a pipe that wakes the actor when it is done.

A Thespian actor handles one message at a time. If the model ran on the
actor's own thread, a long forward pass would leave heartbeats, status
requests and overload refusals waiting behind it. The worker runs the model;
the actor stays responsive and is woken through a ThespianWatch on the pipe.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class Done:
    kind: str
    payload: Any
    value: Any
    error: BaseException | None
    started: float
    finished: float


class Worker:
    def __init__(self, name: str = "model-worker"):
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self.read_fd, self._write_fd = os.pipe()
        os.set_blocking(self.read_fd, False)
        self.busy = False
        self.busy_since = 0.0
        # Daemon: a hung model call must not keep the process alive at exit.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, kind: str, call: Callable[[], Any], payload: Any = None) -> None:
        assert not self.busy, "one job at a time"
        self.busy = True
        self.busy_since = time.monotonic()
        self._jobs.put((kind, call, payload))

    def collect(self) -> list[Done]:
        """Results ready now; call when the read end of the pipe is readable."""
        try:
            while os.read(self.read_fd, 4096):
                pass
        except BlockingIOError:
            pass
        finished = []
        while True:
            try:
                finished.append(self._done.get_nowait())
            except queue.Empty:
                break
        if finished:
            self.busy = False
        return finished

    def stop(self) -> None:
        self._jobs.put(None)

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            kind, call, payload = job
            started = time.monotonic()
            try:
                value, error = call(), None
            except BaseException as exc:  # noqa: BLE001 - reported to the actor as this job's error
                value, error = None, exc
            self._done.put(Done(kind, payload, value, error, started, time.monotonic()))
            os.write(self._write_fd, b"!")
