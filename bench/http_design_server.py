"""One HTTP server for ``bench.http_designs``: the daemon's app on a joined host handle,
with the task handlers' way into the runtime swapped for the design under test.

Run by the benchmark: ``python -m bench.http_design_server DESIGN ADMIN_PORT HTTP_PORT``;
it serves until it is killed.
"""
from __future__ import annotations

import asyncio
import os
import queue
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

import uvicorn

from host import ServiceSystem
from host.http import app as http_app
from host.http.state import HttpState
from messages.task import Task, TaskResult

DESIGNS = ("threadpool", "executor", "inline", "one-endpoint", "no-call")
EXECUTOR_THREADS = 8
ANSWER_WAIT_S = 10.0


class OneEndpoint:
    """One thread and one Thespian endpoint for every task in flight: the handler queues
    a task and awaits a future; the thread sends it, and wakes for answers or for a byte
    on a pipe it watches (Thespian's ``set_watch``, read from the transport's own select).
    Reaches into Thespian's external context (``_systemBase``, its transport): a probe
    of the design, not runtime code."""

    def __init__(self, system: ServiceSystem):
        self._system = system
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._waiting: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future]] = {}
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        threading.Thread(target=self._run, name="one-endpoint", daemon=True).start()

    async def run_task(self, task: Task) -> TaskResult:
        direct = self._system._direct
        target = direct.replica.target(task, None, self._system._conn.epoch)
        if target is None:  # not routable here: as the daemon does
            return await asyncio.to_thread(self._system.router.route_task, task)
        loop = asyncio.get_running_loop()
        answer = loop.create_future()
        self._queue.put((target.address, task, loop, answer))
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass  # the pipe is full: the thread is awake anyway
        try:
            return await asyncio.wait_for(answer, ANSWER_WAIT_S)
        finally:
            direct.replica.done(target)

    def _run(self) -> None:
        with self._system.open_endpoint() as endpoint:
            context = endpoint._systemBase
            context.transport.set_watch([self._wake_r])
            while True:
                while not self._queue.empty():
                    address, task, loop, answer = self._queue.get()
                    self._waiting[task.id] = (loop, answer)
                    context._tx_to_actor(address, task)
                received = getattr(context.transport.run(None, 0.1), "message", None)
                if type(received).__name__ == "WatchMessage":
                    try:
                        os.read(self._wake_r, 4096)
                    except BlockingIOError:
                        pass
                elif isinstance(received, TaskResult) and received.task_id in self._waiting:
                    loop, answer = self._waiting.pop(received.task_id)
                    loop.call_soon_threadsafe(_answer, answer, received)


def _answer(future: asyncio.Future, result: TaskResult) -> None:
    if not future.done():
        future.set_result(result)


def hand_over(design: str, system: ServiceSystem) -> Callable[..., Any]:
    """The replacement for the app's ``run_in_threadpool(fn, *args)``."""
    if design == "executor":
        pool = ThreadPoolExecutor(EXECUTOR_THREADS)
        return lambda fn, *args: asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    async def inline(fn: Callable, *args: Any) -> Any:
        return fn(*args)  # blocks the event loop: a floor, not a design

    if design == "inline":
        return inline
    if design == "no-call":
        async def answer_at_once(fn: Callable, task: Task, *args: Any) -> Any:
            return TaskResult.success(task.id, task.data)
        return answer_at_once
    if design == "one-endpoint":
        mux = OneEndpoint(system)

        async def multiplexed(fn: Callable, task: Any, *args: Any) -> Any:
            return await mux.run_task(task) if isinstance(task, Task) else fn(task, *args)
        return multiplexed
    return http_app.run_in_threadpool


def main() -> None:
    design, admin_port, http_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if design not in DESIGNS:
        raise SystemExit(f"design must be one of {', '.join(DESIGNS)}")
    system = ServiceSystem.connect(admin_port)
    http_app.run_in_threadpool = hand_over(design, system)
    state = HttpState([], None, 1 << 20)
    state.attach(system)
    server = uvicorn.Server(uvicorn.Config(
        http_app.create_app(state), host="127.0.0.1", port=http_port, log_config=None,
        access_log=False, lifespan="off", server_header=False, ws="none"))
    server.run()


if __name__ == "__main__":
    main()
