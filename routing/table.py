"""The router's decisions, without any actor: where a task goes, whether it may
go there now, and which accepted tasks are still waiting for an answer."""
from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from messages.errors import (
    InvalidInput, InvalidTaskType, Overloaded, ServiceNotFound, ServiceUnavailable, ShuttingDown,
)
from messages.service import ServiceStatus
from messages.system import (
    ApplyRoutes, ServiceDirectoryUpdate, route_targets, service_id, split_service_id,
)
from messages.task import Task

# Task metadata that pins a task to one version of the service its type routes to.
VERSION_KEY = "version"
# Up to this many replicas the least loaded is found by looking at all; above it, at
# two picked at random (the power of two choices: nearly as even, and O(1)).
LOOK_AT_ALL_UP_TO = 8


def pinned_version(task: Task) -> str | None:
    """The version a task asks for in its metadata (``{"version": "2"}``), if any."""
    version = task.metadata.get(VERSION_KEY)
    if version is None:
        return None
    if isinstance(version, bool) or not isinstance(version, (str, int)) or version == "":
        raise InvalidInput(f"metadata.{VERSION_KEY}: must be a version such as \"2\", "
                           f"got {version!r:.40}", {"field": f"metadata.{VERSION_KEY}"})
    return str(version)


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
    service: str = ""      # the service id it is a replica of (its own name for the first)

    def takes_work(self) -> bool:
        return (self.address is not None and self.status.accepts_tasks
                and self.in_flight < self.max_queue)


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


class WeightedPicker:
    """Smooth weighted round-robin (nginx's): over any run of picks each service gets
    its share of the weight, evenly spread (90/10 sends the 10 % one task in ten,
    not ten in a row), with no randomness to test around. ``allowed`` leaves out
    services that cannot take work now; their share goes to the others."""

    def __init__(self, weights: Mapping[str, int]):
        self.weights = {sid: w for sid, w in weights.items() if w > 0}
        self._current = dict.fromkeys(self.weights, 0)

    def pick(self, allowed: Callable[[str], bool] = lambda sid: True) -> str:
        candidates = [sid for sid in self.weights if allowed(sid)] or list(self.weights)
        total = sum(self.weights[sid] for sid in candidates)
        for sid in candidates:
            self._current[sid] += self.weights[sid]
        chosen = max(candidates, key=lambda sid: self._current[sid])
        self._current[chosen] -= total
        return chosen


@dataclass
class RouteTable:
    routes: dict[str, Any]  # task type -> service id, or {service id: weight}
    services: dict[str, ServiceEntry] = field(default_factory=dict)
    draining: bool = False
    _pickers: dict[str, WeightedPicker] = field(default_factory=dict, repr=False, init=False)

    def set_routes(self, routes: Mapping[str, Any]) -> None:
        """The whole table at once (at set-up, or when a config is applied)."""
        self.routes = dict(routes)
        self._pickers = {}

    def update(self, msg: ServiceDirectoryUpdate) -> None:
        if msg.retiring:  # a generation an apply replaced or removed: no longer in the table
            return
        entry = self.services.get(msg.name)
        if entry is None or entry.generation != msg.generation:
            self.replace(msg)
        else:
            entry.address, entry.status, entry.max_queue = msg.address, msg.status, msg.max_queue

    def apply(self, msg: ApplyRoutes) -> set[tuple[str, int]]:
        """A config apply's whole change at once (see ApplyRoutes); returns the
        (service, generation) pairs it replaced or removed."""
        moving = {entry.name for entry in msg.directory} | set(msg.removed)
        old = {(e.name, e.generation) for e in self.services.values() if e.name in moving}
        for entry in msg.directory:
            self.replace(entry)
        for name in msg.removed:
            self.services.pop(name, None)
        self.set_routes(msg.routes)
        return old

    def replace(self, msg: ServiceDirectoryUpdate) -> None:
        """``msg``'s generation is the service's from now on, whatever the table had."""
        self.services[msg.name] = ServiceEntry(msg.name, msg.address, msg.status, msg.generation,
                                               msg.max_queue, msg.kind, msg.task_timeout_s,
                                               service=msg.replica_of or msg.name)

    def service_for(self, task_type: str, version: str | None = None) -> str:
        """The service id a task of ``task_type`` goes to: the route's, picked by
        weight when it is split, or (``version``) that version of the routed service."""
        try:
            route = self.routes[task_type]
        except KeyError:
            raise InvalidTaskType(f"no route for task type {task_type!r}; routed types: "
                                  f"{', '.join(sorted(self.routes))}",
                                  {"task_type": task_type}) from None
        if version is not None:
            return self._pinned(task_type, route, version)
        if isinstance(route, str):
            return route
        picker = self._pickers.get(task_type)
        if picker is None:
            picker = self._pickers[task_type] = WeightedPicker(route_targets(route))
        return picker.pick(self._takes_work)

    def _pinned(self, task_type: str, route: Any, version: str) -> str:
        names = dict.fromkeys(split_service_id(sid)[0] for sid in route_targets(route))
        for name in names:
            sid = service_id(name, version)
            if sid in self.services:
                return sid
        running = sorted({e.service for e in self.services.values()
                          if split_service_id(e.service)[0] in names})
        raise ServiceNotFound(f"task type {task_type!r} goes to {', '.join(names)}, which runs no "
                              f"version {version!r} (running: {', '.join(running) or 'none'})",
                              {"task_type": task_type, "version": version})

    def _takes_work(self, sid: str) -> bool:
        return any(e.takes_work() for e in self.replicas(sid))

    def replicas(self, service: str) -> list[ServiceEntry]:
        """The entries of a service id's replicas; of one replica, for a replica's id."""
        entry = self.services.get(service)
        if entry is not None and entry.service != service:
            return [entry]
        return [e for e in self.services.values() if e.service == service]

    def admit(self, service: str) -> ServiceEntry:
        """The entry of the replica of ``service`` that takes its next task: of those that
        may take one more now, the one with the fewest in flight; otherwise a typed error."""
        if self.draining:
            raise ShuttingDown("the system is shutting down and takes no new tasks")
        replicas = self.replicas(service)
        if not replicas:
            raise ServiceNotFound(f"no service named {service!r} is configured",
                                  {"service": service})
        if len(replicas) > 1:
            ready = [e for e in replicas if e.takes_work()]
            if ready:
                if len(ready) > LOOK_AT_ALL_UP_TO:
                    ready = random.sample(ready, 2)
                # Ties at random: hosts that route their own tasks do not all pick the first.
                return min(ready, key=lambda e: (e.in_flight, random.random()))
        return self._admit_one(replicas[0], service)

    @staticmethod
    def _admit_one(entry: ServiceEntry, service: str) -> ServiceEntry:
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

    def running_on(self, generations: set[tuple[str, int]]) -> int:
        """How many tasks were sent to these (service, generation) pairs and are unanswered."""
        return sum(1 for p in self._by_id.values()
                   if p.stage == "service" and (p.service, p.generation) in generations)

    def next_deadline(self) -> float | None:
        while self._deadlines and self._deadlines[0][1] not in self._by_id:
            heapq.heappop(self._deadlines)
        return self._deadlines[0][0] if self._deadlines else None
