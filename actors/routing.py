"""The router's decisions, without any actor: where a task goes, whether it may
go there now, and which accepted tasks are still waiting for an answer."""
from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from messages.errors import (
    InvalidTaskType, Overloaded, ServiceNotFound, ServiceUnavailable, ShuttingDown,
)
from messages.service import ServiceStatus
from messages.system import ServiceDirectoryUpdate
from messages.task import Task


@dataclass
class ServiceEntry:
    name: str
    address: Any
    status: ServiceStatus
    generation: int
    max_queue: int
    kind: str = ""
    task_timeout_s: float | None = None
    in_flight: int = 0


@dataclass
class Pending:
    """An accepted task: the router owes ``caller`` exactly one answer for it."""

    request_id: int
    task: Task
    caller: Any
    service: str
    received_at: float
    deadline: float
    generation: int = 0
    context_fetch_ms: float = 0.0
    context_started: float = 0.0
    direct: bool = False
    stage: str = "service"   # "context" while its context is being fetched


@dataclass
class RouteTable:
    routes: dict[str, str]
    services: dict[str, ServiceEntry] = field(default_factory=dict)
    draining: bool = False

    def update(self, msg: ServiceDirectoryUpdate) -> None:
        entry = self.services.get(msg.name)
        if entry is None or entry.generation != msg.generation:
            self.services[msg.name] = ServiceEntry(msg.name, msg.address, msg.status,
                                                   msg.generation, msg.max_queue, msg.kind,
                                                   msg.task_timeout_s)
        else:
            entry.address, entry.status, entry.max_queue = msg.address, msg.status, msg.max_queue

    def service_for(self, task_type: str) -> str:
        try:
            return self.routes[task_type]
        except KeyError:
            raise InvalidTaskType(f"no route for task type {task_type!r}; routed types: "
                                  f"{', '.join(sorted(self.routes))}",
                                  {"task_type": task_type}) from None

    def admit(self, service: str) -> ServiceEntry:
        """The service's entry if it may take one more task now; otherwise a typed error."""
        if self.draining:
            raise ShuttingDown("the system is shutting down and takes no new tasks")
        entry = self.services.get(service)
        if entry is None:
            raise ServiceNotFound(f"no service named {service!r} is configured",
                                  {"service": service})
        if entry.address is None or not entry.status.accepts_tasks:
            raise ServiceUnavailable(f"service {service!r} is {entry.status.value}",
                                     {"service": service, "status": entry.status.value})
        if entry.in_flight >= entry.max_queue:
            raise Overloaded(f"service {service!r} already has {entry.in_flight} tasks in flight "
                             f"(max_queue {entry.max_queue})",
                             {"service": service, "max_queue": entry.max_queue})
        return entry


class PendingTasks:
    """Accepted tasks by request id, with their deadlines in a heap."""

    def __init__(self) -> None:
        self._by_id: dict[int, Pending] = {}
        self._deadlines: list[tuple[float, int]] = []

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self):
        return iter(list(self._by_id.values()))

    def add(self, pending: Pending) -> None:
        self._by_id[pending.request_id] = pending
        heapq.heappush(self._deadlines, (pending.deadline, pending.request_id))

    def get(self, request_id: int) -> Pending | None:
        return self._by_id.get(request_id)

    def pop(self, request_id: int) -> Pending | None:
        return self._by_id.pop(request_id, None)

    def expired(self, now: float) -> list[Pending]:
        """Remove and return every task whose deadline has passed."""
        out = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, request_id = heapq.heappop(self._deadlines)
            pending = self._by_id.pop(request_id, None)
            if pending is not None:
                out.append(pending)
        return out

    def lost(self, service: str, generation: int) -> list[Pending]:
        """Remove and return the tasks that were running on a service generation now gone."""
        gone = [p for p in self._by_id.values() if p.service == service
                and p.generation == generation and p.stage == "service"]
        for p in gone:
            del self._by_id[p.request_id]
        return gone

    def next_deadline(self) -> float | None:
        while self._deadlines and self._deadlines[0][1] not in self._by_id:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None
