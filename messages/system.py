"""Messages between the host, the supervisor and the router."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping

from .base import Message
from .errors import ErrorInfo
from .service import ServiceStatus
from .task import Task, effective_timeout_s
from .validation import is_int, require, require_seconds, require_text

# How a host or an external actor finds the running supervisor: Thespian's
# createActor with this class path and global name returns the existing one.
SUPERVISOR_GLOBAL_NAME = "grym.supervisor"
SUPERVISOR_CLASS = "supervisor.actor.Supervisor"


@dataclass(frozen=True)
class ErrorReply(Message):
    """The answer to any request that failed (tasks get a failed TaskResult instead).

    ``ref`` repeats the request's own ``ref``, so a caller with several requests
    in flight knows which one failed.
    """

    error: ErrorInfo
    ref: Any = None


# -- host -> supervisor -----------------------------------------------------------
@dataclass(frozen=True)
class StartSystem(Message):
    """Sent once by the launcher: the validated configuration, as a plain dict."""

    config: Mapping[str, Any]

    def validate(self) -> None:
        require(isinstance(self.config, Mapping), "config", "must be a mapping")


@dataclass(frozen=True)
class GetSystemInfo(Message):
    pass


@dataclass(frozen=True)
class ServiceInfo(Message):
    name: str
    kind: str
    status: ServiceStatus
    generation: int = 0
    restarts: int = 0
    pid: int | None = None
    last_error: str | None = None
    task_timeout_s: float | None = None  # the service's own default deadline for a task


@dataclass(frozen=True)
class SystemInfo(Message):
    """Where the system's actors are, and what a caller needs to know how long a
    task may take (``timeout_for``). External actors start here."""

    supervisor: Any
    router: Any
    context: Any
    services: tuple[ServiceInfo, ...]
    default_task_timeout_s: float
    routes: Mapping[str, str] = field(default_factory=dict)
    shutting_down: bool = False
    core: tuple[ServiceInfo, ...] = ()  # the router and the context actor
    log_dir: str | None = None
    pid: int | None = None               # the supervisor's process
    admin_port: int | None = None        # where the admin listens (picked at start if not set)

    def validate(self) -> None:
        require_seconds(self.default_task_timeout_s, "default_task_timeout_s", allow_none=False)

    def timeout_for(self, task: Task, service: str | None = None) -> float:
        """The deadline the router gives ``task``: sent to ``service``, or routed by its type."""
        name = service if service is not None else self.routes.get(task.type)
        own = next((s.task_timeout_s for s in self.services if s.name == name), None)
        return effective_timeout_s(task, own, self.default_task_timeout_s)


@dataclass(frozen=True)
class GetService(Message):
    """Find a service by name and make sure it is initialized (lazy init on first use)."""

    name: str
    initialize: bool = True

    def validate(self) -> None:
        require_text(self.name, "name")


@dataclass(frozen=True)
class ListServices(Message):
    pass


@dataclass(frozen=True)
class ServiceList(Message):
    services: tuple[ServiceInfo, ...]


@dataclass(frozen=True)
class GetServiceMetrics(Message):
    name: str | None = None  # None: every service

    def validate(self) -> None:
        if self.name is not None:
            require_text(self.name, "name")


@dataclass(frozen=True)
class MetricsReport(Message):
    services: tuple[Any, ...]  # ServiceMetrics


@dataclass(frozen=True)
class ShutdownSystem(Message):
    """Graceful stop: refuse new tasks, let accepted ones finish up to drain_s."""

    drain_s: float = 10.0

    def validate(self) -> None:
        require_seconds(self.drain_s, "drain_s", allow_none=False)


@dataclass(frozen=True)
class SystemStopped(Message):
    pass


# -- health -------------------------------------------------------------------------
class HealthEventKind(str, enum.Enum):
    SERVICE_UNHEALTHY = "service_unhealthy"
    SERVICE_DEGRADED = "service_degraded"
    SERVICE_RECOVERED = "service_recovered"
    SERVICE_RESTARTED = "service_restarted"
    SERVICE_STOPPED = "service_stopped"      # ended normally, not restarted (transient, temporary)
    SERVICE_FAILED = "service_failed"


class HealthCause(str, enum.Enum):
    """Why the health policy judged a child as it did (``reason`` says it for people)."""

    STARTING = "starting"                    # no heartbeat answered yet; only the start-up timeout applies
    STARTUP_TIMEOUT = "startup_timeout"
    MISSED_HEARTBEATS = "missed_heartbeats"
    HUNG = "hung"                            # a task far past its deadline
    ERROR_RATE = "error_rate"
    MEMORY = "memory"
    RECOVERING = "recovering"                # well again after being unhealthy
    HEALTHY = "healthy"


@dataclass(frozen=True)
class HealthEvent(Message):
    seq: int
    kind: HealthEventKind
    service: str
    status: ServiceStatus
    reason: str
    at: float  # wall clock
    cause: HealthCause | None = None  # set when a health verdict caused the event


@dataclass(frozen=True)
class SubscribeHealth(Message):
    """Receive HealthEvents (all kinds when ``kinds`` is empty); ``since`` replays missed ones."""

    kinds: tuple[HealthEventKind, ...] = ()
    since: int | None = None

    def validate(self) -> None:
        require(isinstance(self.kinds, tuple) and all(isinstance(k, HealthEventKind) for k in self.kinds),
                "kinds", "must be a tuple of HealthEventKind")
        require(self.since is None or (is_int(self.since) and self.since >= 0), "since",
                "must be a non-negative integer or None")


@dataclass(frozen=True)
class UnsubscribeHealth(Message):
    pass


@dataclass(frozen=True)
class Subscribed(Message):
    last_seq: int


@dataclass(frozen=True)
class GetHealth(Message):
    pass


@dataclass(frozen=True)
class HealthReport(Message):
    statuses: Mapping[str, ServiceStatus]
    events: tuple[HealthEvent, ...] = ()   # the most recent, oldest first
    counts: Mapping[str, int] = field(default_factory=dict)  # every event so far, by kind


# -- host -> router -------------------------------------------------------------------
@dataclass(frozen=True)
class ExecuteTask(Message):
    """Run ``task`` on the named service, skipping the route table and context fetch."""

    task: Task
    service: str

    def validate(self) -> None:
        require(isinstance(self.task, Task), "task", "must be a Task")
        self.task.validate()
        require_text(self.service, "service")


@dataclass(frozen=True)
class GetRoutes(Message):
    pass


@dataclass(frozen=True)
class Routes(Message):
    """The router's route table and the services it knows, as it sees them now."""

    routes: Mapping[str, str]
    services: tuple[str, ...] = ()


# -- supervisor -> router --------------------------------------------------------------
@dataclass(frozen=True)
class RouterSetup(Message):
    routes: Mapping[str, str]
    context: Any
    fetch_context: frozenset[str]  # services whose tasks get context fetched
    default_timeout_s: float
    token: str = ""  # the supervisor's: later control messages must carry it
    # Every service as the supervisor knows it now: a restarted router starts complete.
    directory: tuple[ServiceDirectoryUpdate, ...] = ()

    def validate(self) -> None:
        require(isinstance(self.routes, Mapping) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.routes.items()),
            "routes", "must map task types to service names")
        require(isinstance(self.fetch_context, frozenset), "fetch_context", "must be a frozenset")
        require(isinstance(self.directory, tuple) and all(
            isinstance(d, ServiceDirectoryUpdate) for d in self.directory),
            "directory", "must be a tuple of ServiceDirectoryUpdate")
        for entry in self.directory:
            entry.validate()
        require_seconds(self.default_timeout_s, "default_timeout_s", allow_none=False)


@dataclass(frozen=True)
class ServiceDirectoryUpdate(Message):
    """Where a service is and whether it takes work. ``address`` None: it is down.

    ``lost_reason`` is set when the service's process went away: tasks in flight on
    that generation are answered with ``lost_code`` at once.
    """

    name: str
    address: Any
    status: ServiceStatus
    generation: int
    max_queue: int
    kind: str = ""
    task_timeout_s: float | None = None
    lost_reason: str | None = None
    lost_code: str | None = None
    token: str = ""

    def validate(self) -> None:
        require_text(self.name, "name")
        require(isinstance(self.status, ServiceStatus), "status", "must be a ServiceStatus")
        require(is_int(self.generation) and is_int(self.max_queue),
                "generation", "generation and max_queue must be integers")


@dataclass(frozen=True)
class ContextMoved(Message):
    """Supervisor -> router: the context actor's address for its new generation
    (None while it is down: tasks then run without context instead of waiting)."""

    address: Any
    generation: int
    token: str = ""

    def validate(self) -> None:
        require(is_int(self.generation), "generation", "must be an integer")


@dataclass(frozen=True)
class ContextSetup(Message):
    """Supervisor -> context actor: its settings (the config's [context] table)."""

    settings: Mapping[str, Any]

    def validate(self) -> None:
        require(isinstance(self.settings, Mapping), "settings", "must be a mapping")


@dataclass(frozen=True)
class Drain(Message):
    """Supervisor -> router: refuse new tasks; answer DrainDone when none are in flight."""

    drain_s: float
    token: str = ""

    def validate(self) -> None:
        require_seconds(self.drain_s, "drain_s", allow_none=False)


@dataclass(frozen=True)
class DrainDone(Message):
    answered_with_timeout: int = 0
    token: str = ""


# -- the router's request counts and stage histograms (served as Prometheus metrics) --
# Seconds; from a tenth of a millisecond (a message hop) to ten seconds (a long model call).
BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
             0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class GetRouterMetrics(Message):
    pass


@dataclass(frozen=True)
class RouterMetricsReport(Message):
    requests: dict[tuple[str, str, str], int]           # (service, task type, outcome) -> n
    stages: dict[tuple[str, str], tuple[list[int], float]]  # (service, stage) -> (counts, sum)
    in_flight: dict[str, int]
    late_results: int
    buckets_s: tuple[float, ...] = BUCKETS_S
