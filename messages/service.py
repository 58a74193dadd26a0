"""Lifecycle, status, metrics and health messages of one model service."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping

from .base import Message, require, require_seconds, require_text
from .errors import ErrorInfo
from .task import Task, TaskResult


class ServiceStatus(str, enum.Enum):
    OFFLINE = "offline"            # process up (or not yet), model not loaded
    INITIALIZING = "initializing"
    ONLINE = "online"
    DEGRADED = "degraded"          # serving, but a health threshold is crossed
    UNHEALTHY = "unhealthy"        # missed heartbeats or hung: about to be restarted
    STOPPING = "stopping"
    FAILED = "failed"              # restart limit reached; needs an operator

    @property
    def accepts_tasks(self) -> bool:
        return self in (ServiceStatus.OFFLINE, ServiceStatus.INITIALIZING,
                        ServiceStatus.ONLINE, ServiceStatus.DEGRADED)


@dataclass(frozen=True)
class ServiceMetrics(Message):
    name: str = ""
    requests: int = 0
    successes: int = 0
    errors: int = 0
    error_rate: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    latency_p99_ms: float = 0.0
    latency_mean_ms: float = 0.0
    queue_depth: int = 0
    rss_bytes: int = 0
    cpu_percent: float = 0.0
    restarts: int = 0
    last_processed_at: float | None = None  # wall clock, seconds since the epoch
    batches: int = 0
    mean_batch_size: float = 0.0


# -- lifecycle (the seed's ModelService interface, as messages) -------------
@dataclass(frozen=True)
class ConfigureService(Message):
    """First message a new service actor gets from its supervisor."""

    name: str
    kind: str
    settings: Any
    max_queue: int
    max_batch_size: int
    max_batch_delay_ms: float
    generation: int
    eager: bool = False
    token: str = ""  # the supervisor's: a Shutdown must carry it

    def validate(self) -> None:
        require_text(self.name, "name")
        require(isinstance(self.max_queue, int) and self.max_queue > 0, "max_queue",
                "must be a positive integer")


@dataclass(frozen=True)
class Initialize(Message):
    """Load the model now (otherwise it loads on the first task)."""


@dataclass(frozen=True)
class Shutdown(Message):
    """Refuse new work, finish what is running (up to drain_s), release the model."""

    drain_s: float = 5.0
    token: str = ""

    def validate(self) -> None:
        require_seconds(self.drain_s, "drain_s", allow_none=False)


@dataclass(frozen=True)
class GetStatus(Message):
    pass


@dataclass(frozen=True)
class GetMetrics(Message):
    pass


@dataclass(frozen=True)
class StatusReply(Message):
    name: str
    status: ServiceStatus
    pid: int
    initialized: bool
    details: Mapping[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None


@dataclass(frozen=True)
class Heartbeat(Message):
    seq: int


@dataclass(frozen=True)
class HeartbeatAck(Message):
    """A service's answer to a heartbeat: alive, and what it is doing."""

    seq: int
    name: str
    generation: int
    pid: int
    status: ServiceStatus
    queue_depth: int
    busy_for_s: float           # how long the current batch has run, 0 when idle
    overdue_s: float            # how far the running batch is past its deadline, 0 if not
    rss_bytes: int
    error_rate: float           # over the recent window of requests
    recent_requests: int        # size of that window so far


# -- work ---------------------------------------------------------------------
@dataclass(frozen=True)
class ServiceTask(Message):
    """A task handed to a service. ``budget_s`` is what is left of its deadline."""

    request_id: int
    task: Task
    budget_s: float

    def validate(self) -> None:
        require(isinstance(self.task, Task), "task", "must be a Task")
        self.task.validate()
        require_seconds(self.budget_s, "budget_s", allow_none=False)


@dataclass(frozen=True)
class ServiceTaskDone(Message):
    request_id: int
    result: TaskResult
