"""Lifecycle, status, metrics and health messages of one model service."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping

from .base import Message
from .errors import ErrorInfo
from .task import Task, TaskResult
from .validation import is_int, is_number, require, require_seconds, require_text


class ServiceStatus(str, enum.Enum):
    OFFLINE = "offline"            # process up (or not yet), model not loaded
    INITIALIZING = "initializing"
    ONLINE = "online"
    DEGRADED = "degraded"          # serving, but a health threshold is crossed
    UNHEALTHY = "unhealthy"        # missed heartbeats or hung: about to be restarted
    STOPPING = "stopping"
    STOPPED = "stopped"            # ended normally and, being transient or temporary, not restarted
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
    """First message a new service actor gets from its supervisor: the kind's own
    settings, and the runtime's keys of the service spec that the actor applies."""

    name: str
    kind: str
    settings: Any
    max_queue: int
    max_batch_size: int
    max_batch_delay_ms: float
    generation: int
    default_task_timeout_s: float         # the system's, for tasks sent to the actor directly
    task_timeout_s: float | None = None   # the service's own
    max_memory: int | None = None         # bytes; the kind may refuse to load above it
    eager: bool = False
    token: str = ""  # the supervisor's: a Shutdown must carry it
    warmup: bool = True                   # run the kind's warm-up inputs before going online

    def validate(self) -> None:
        require_text(self.name, "name")
        require(is_int(self.max_queue) and self.max_queue > 0, "max_queue",
                "must be a positive integer")
        require_seconds(self.default_task_timeout_s, "default_task_timeout_s", allow_none=False)
        require_seconds(self.task_timeout_s, "task_timeout_s")
        require(self.max_memory is None or (is_int(self.max_memory) and self.max_memory > 0),
                "max_memory", "must be a positive number of bytes or None")


@dataclass(frozen=True)
class Initialize(Message):
    """Load the model now (otherwise it loads on the first task)."""


@dataclass(frozen=True)
class Shutdown(Message):
    """Refuse new work, finish what is running (up to drain_s), release the model."""

    drain_s: float = 5.0
    token: str = ""
    # A config apply replaced or removed this generation: a task that still reaches it
    # is refused as retryable (SERVICE_UNAVAILABLE), since its successor takes it.
    retiring: bool = False

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
    """A child's answer to a heartbeat: alive, and what it is doing.

    Built in one place (``GrymActor.on_basic_heartbeat``); an actor without a
    model leaves the defaults, the service actor fills in its work and health.
    """

    seq: int
    pid: int                    # lets the supervisor kill a hung process
    name: str = ""
    generation: int = 0
    status: ServiceStatus = ServiceStatus.ONLINE
    queue_depth: int = 0
    busy_for_s: float = 0.0     # how long the current batch has run, 0 when idle
    overdue_s: float = 0.0      # how far the running batch is past its deadline, 0 if not
    rss_bytes: int = 0
    error_rate: float = 0.0     # over the recent window of requests
    recent_requests: int = 0    # size of that window so far

    def validate(self) -> None:
        # The supervisor's health rules compare these numbers on its timer: a
        # malformed ack must be refused here, not stop the heartbeat loop there.
        require(is_int(self.seq) and is_int(self.pid) and self.pid > 0, "pid",
                "seq and pid must be integers, pid positive")
        require(isinstance(self.status, ServiceStatus), "status", "must be a ServiceStatus")
        for name in ("queue_depth", "busy_for_s", "overdue_s", "rss_bytes", "error_rate",
                     "recent_requests"):
            value = getattr(self, name)
            require(is_number(value) and value >= 0, name, f"must be a number >= 0, got {value!r:.40}")


@dataclass(frozen=True)
class ServiceStopped(Message):
    """Service -> its supervisor: it has answered its work and released its model,
    and asks to end normally (OTP's exit reason ``normal``). The supervisor ends
    it, and a ``transient`` service is then not restarted."""

    name: str
    generation: int
    reason: str

    def validate(self) -> None:
        require_text(self.name, "name")
        require(is_int(self.generation), "generation", "must be an integer")
        require_text(self.reason, "reason", max_len=1024)


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

    def validate(self) -> None:
        require(is_int(self.request_id), "request_id", "must be an integer")
        require(isinstance(self.result, TaskResult), "result", "must be a TaskResult")
        self.result.validate()
