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

    Tasks that arrived while the worker was busy, or within ``max_delay_s`` of
    the oldest waiting one, run together (up to ``max_batch_size``). A full
    batch runs at once; with no delay configured, whatever is queued runs as
    soon as the worker is free.
    """

    def __init__(self, max_batch_size: int, max_delay_s: float):
        self.max_batch_size = max_batch_size
        self.max_delay_s = max_delay_s

    def plan(self, queued: int, oldest_wait_s: float, worker_busy: bool) -> BatchPlan:
        if worker_busy or queued == 0:
            return BatchPlan()
        if queued >= self.max_batch_size or oldest_wait_s >= self.max_delay_s:
            return BatchPlan(take=min(queued, self.max_batch_size))
        return BatchPlan(wait_s=self.max_delay_s - oldest_wait_s)


class TaskQueue:
    """FIFO of Queued tasks that hands out batches and drops expired tasks."""

    def __init__(self) -> None:
        self._items: deque[Queued] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def push(self, item: Queued) -> None:
        self._items.append(item)

    def oldest_wait(self, now: float) -> float:
        return now - self._items[0].received_at if self._items else 0.0

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
