"""The service's queue and its batching decision, without any actor."""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from messages.task import Task


@dataclass
class Queued:
    """A task waiting in (or taken from) a service's queue."""

    request_id: int
    task: Task
    reply_to: Any
    received_at: float   # time.monotonic() in the service process
    deadline: float
    direct: bool = False  # sent as a bare Task, so answered with a bare TaskResult


@dataclass(frozen=True)
class BatchPlan:
    take: int = 0          # run this many now
    wait_s: float = 0.0    # or look again after this long (0: nothing to do)


class BatchPolicy:
    """When to start a forward pass, and with how many tasks.

    A full batch runs at once. Otherwise the policy waits only for tasks it has
    reason to expect, and at most ``max_delay_s`` after the worker became free:
    callers that were just answered tend to send their next task at once, so
    after a batch of n tasks, with q queued meanwhile, the next batch waits for
    up to n + q tasks. A lone caller's next task is the only one expected, so it
    runs as soon as it comes: nothing waits out the delay when nothing else is
    coming. (Ray Serve's ``@serve.batch`` waits ``batch_wait_timeout_s`` for
    ``max_batch_size`` tasks every time.) With no delay configured, whatever is
    queued runs as soon as the worker is free.
    """

    def __init__(self, max_batch_size: int, max_delay_s: float):
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s
        self.expected = 1                  # tasks the next batch waits for
        self.wait_until = float("-inf")    # and until when

    def batch_done(self, answered: int, queued: int, now: float) -> None:
        """The worker is free again, after a batch of ``answered`` tasks."""
        self.expected = max(1, min(self.max_batch_size, answered + queued))
        self.wait_until = now + self.max_delay_s

    def plan(self, queued: int, now: float, worker_busy: bool) -> BatchPlan:
        if worker_busy or queued == 0:
            return BatchPlan()
        expected = self.expected if now < self.wait_until else 1
        if queued >= expected:
            return BatchPlan(take=min(queued, self.max_batch_size))
        return BatchPlan(wait_s=self.wait_until - now)


class TaskQueue:
    """FIFO of Queued tasks that hands out batches and drops expired tasks."""

    def __init__(self) -> None:
        self._items: deque[Queued] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: Queued) -> None:
        self._items.append(item)

    def take(self, count: int, now: float) -> tuple[list[Queued], list[Queued]]:
        """Up to ``count`` live tasks, and every expired task met on the way."""
        batch: list[Queued] = []
        expired: list[Queued] = []
        while self._items and len(batch) < count:
            item = self._items.popleft()
            (expired if item.deadline <= now else batch).append(item)
        return batch, expired

    def drain(self) -> list[Queued]:
        items, self._items = list(self._items), deque()
        return items
