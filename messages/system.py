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

# -- service ids and routes ----------------------------------------------------------
# A service runs as ``name`` or, with a version, as ``name@version``: each version is
# its own service (processes, health, metrics labels), so two can run side by side.
# A route sends a task type to one service id, or splits it by weight among several
# ({service id: weight}).
VERSION_SEPARATOR = "@"


def service_id(name: str, version: str | None) -> str:
    return name if version is None else f"{name}{VERSION_SEPARATOR}{version}"


# A service with ``replicas = N`` runs N children: the service id itself is replica 0,
# and ``id#1`` .. ``id#N-1`` are the others, each with its own process, generation,
# health and metrics. Routes name the service; the router picks the replica.
REPLICA_SEPARATOR = "#"


def replica_id(sid: str, index: int) -> str:
    return sid if index == 0 else f"{sid}{REPLICA_SEPARATOR}{index}"


def replica_service(rid: str) -> str:
    """``"asr@2#1"`` -> ``"asr@2"``: the service id a replica id belongs to."""
    return rid.partition(REPLICA_SEPARATOR)[0]


def split_service_id(sid: str) -> tuple[str, str | None]:
    """``"asr@2"`` -> ``("asr", "2")``; ``"asr"`` -> ``("asr", None)``."""
    name, sep, version = sid.partition(VERSION_SEPARATOR)
    return (name, version) if sep else (name, None)


def route_targets(route: Any) -> dict[str, int]:
    """A route as {service id: weight}: a plain id is the whole weight."""
    return {route: 1} if isinstance(route, str) else dict(route)


def is_route(route: Any) -> bool:
    """A service id, or a non-empty {service id: weight >= 0} with some weight above 0."""
    if isinstance(route, str):
        return bool(route)
    return (isinstance(route, Mapping) and bool(route)
            and all(isinstance(k, str) and k and is_int(w) and w >= 0 for k, w in route.items())
            and sum(route.values()) > 0)


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
    # The launcher's process: the supervisor ends the whole runtime when it is gone, so
    # that no runtime keeps serving on the port without its watcher (kill -9 of the launcher).
    launcher_pid: int | None = None
    # What the leader's actor system advertises (runtime.capabilities): where services
    # with requirements may run besides the members that join its convention.
    capabilities: Mapping[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        require(isinstance(self.config, Mapping), "config", "must be a mapping")
        require(isinstance(self.capabilities, Mapping), "capabilities", "must be a mapping")
        require(self.launcher_pid is None or is_int(self.launcher_pid), "launcher_pid",
                "must be an integer or None")


@dataclass(frozen=True)
class SystemStopping(Message):
    """Supervisor -> launcher: a stop was asked for (ShutdownSystem, or the admin's
    exit request), so the end of the supervisor that follows is not a crash to restart."""


@dataclass(frozen=True)
class GetSystemInfo(Message):
    """Answered with SystemInfo once the system is started (a host that joins while
    the launcher is still starting a new runtime waits for it)."""


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
    version: str | None = None           # from its table; its id (``name``) is name@version
    address: Any = None   # the service actor's, while it is up: hosts send tasks straight to it
    member: str | None = None            # the convention member it runs on (its name)
    replica_of: str | None = None        # the service id, for a replica other than the first


@dataclass(frozen=True)
class MemberInfo(Message):
    """An actor system of the runtime's convention, as the supervisor sees it: the
    leader's own (``local``) or a member's (``run.py join``)."""

    name: str
    address: str | None                  # where its admin listens, host:port
    local: bool
    up: bool                             # answers the supervisor's pings
    capabilities: Mapping[str, Any] = field(default_factory=dict)
    services: tuple[str, ...] = ()       # the services running there


@dataclass(frozen=True)
class SystemInfo(Message):
    """Where the system's actors are, and what a caller needs to know how long a
    task may take (``timeout_for``). External actors start here."""

    supervisor: Any
    router: Any
    context: Any
    services: tuple[ServiceInfo, ...]
    default_task_timeout_s: float
    routes: Mapping[str, Any] = field(default_factory=dict)  # task type -> route
    shutting_down: bool = False
    core: tuple[ServiceInfo, ...] = ()  # the router and the context actor
    log_dir: str | None = None
    pid: int | None = None               # the supervisor's process
    admin_port: int | None = None        # where the admin listens (picked at start if not set)
    # Which start of the runtime this is: a new one after the launcher restarted it
    # (host handles re-join when it changes). ``admin_pid``: the admin's process.
    incarnation: str = ""
    admin_pid: int | None = None
    last_apply: str | None = None        # what the last config apply did, or why it failed
    members: tuple[MemberInfo, ...] = ()  # the leader's actor system first, then each member

    def validate(self) -> None:
        require_seconds(self.default_task_timeout_s, "default_task_timeout_s", allow_none=False)

    def timeout_for(self, task: Task, service: str | None = None) -> float:
        """The deadline the router gives ``task``: sent to ``service``, or routed by its
        type (a split route: the longest of its services')."""
        names = [service] if service is not None else list(route_targets(
            self.routes.get(task.type, "")))
        own = {s.name: s.task_timeout_s for s in self.services}
        return max(effective_timeout_s(task, own.get(n), self.default_task_timeout_s)
                   for n in names or [""])


@dataclass(frozen=True)
class GetService(Message):
    """Find a service by name and make sure it is initialized (lazy init on first use)."""

    name: str
    initialize: bool = True

    def validate(self) -> None:
        require_text(self.name, "name")


@dataclass(frozen=True)
class RestartService(Message):
    """OTP's restart_child: start a FAILED (or STOPPED) service again, with a fresh
    restart window. Answered with its ServiceInfo once it is online, or an ErrorReply
    (CONFLICT while it is still running; INIT_ERROR if it fails to start again)."""

    name: str

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
    ROLLOUT_FAILED = "rollout_failed"        # an apply's new service did not come up: nothing changed
    SERVICE_SCALED = "service_scaled"        # the autoscaler changed a service's replicas
    # Sent by a host handle, not the supervisor: it re-joined a new start of the runtime,
    # whose event log starts afresh; events of the old one after the last seen may be missing.
    RUNTIME_RESTARTED = "runtime_restarted"


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
class SubscribeRoutes(Message):
    """Host -> supervisor: keep me a replica of the router's table (the host routes its
    own tasks straight to the services, as Ray Serve's handles do). The answer is a
    RouterSetup as of now; after it, every message the router gets about services,
    routes and the context actor comes to the subscriber too."""


@dataclass(frozen=True)
class UnsubscribeRoutes(Message):
    pass


@dataclass(frozen=True)
class DirectTaskMetrics(Message):
    """Host -> router: the figures of the tasks a host sent straight to services since
    its last report, added to the router's own (one place serves every task's metrics)."""

    report: "RouterMetricsReport"

    def validate(self) -> None:
        require(isinstance(self.report, RouterMetricsReport), "report",
                "must be a RouterMetricsReport")


@dataclass(frozen=True)
class Routes(Message):
    """The router's route table and the services it knows, as it sees them now."""

    routes: Mapping[str, Any]   # task type -> route
    services: tuple[str, ...] = ()


# -- supervisor -> router --------------------------------------------------------------
def _require_table(msg: Any) -> None:
    """The fields RouterSetup and ApplyRoutes share: a whole route table and directory."""
    _require_routes(msg.routes)
    require(isinstance(msg.fetch_context, frozenset), "fetch_context", "must be a frozenset")
    require(isinstance(msg.directory, tuple) and all(
        isinstance(d, ServiceDirectoryUpdate) for d in msg.directory),
        "directory", "must be a tuple of ServiceDirectoryUpdate")
    for entry in msg.directory:
        entry.validate()


def _require_routes(routes: Any) -> None:
    require(isinstance(routes, Mapping) and all(
        isinstance(k, str) and is_route(v) for k, v in routes.items()),
        "routes", "must map task types to a service id or to {service id: weight}")


@dataclass(frozen=True)
class RouterSetup(Message):
    routes: Mapping[str, Any]  # task type -> route
    context: Any
    fetch_context: frozenset[str]  # services whose tasks get context fetched
    default_timeout_s: float
    token: str = ""  # the supervisor's: later control messages must carry it
    # Every service as the supervisor knows it now: a restarted router starts complete.
    directory: tuple[ServiceDirectoryUpdate, ...] = ()

    def validate(self) -> None:
        _require_table(self)
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
    # A generation that a config apply has replaced or removed: the router no longer
    # sends it work, and this update only settles the tasks it still had.
    retiring: bool = False
    replica_of: str | None = None   # the service id, for a replica other than the first

    def validate(self) -> None:
        require_text(self.name, "name")
        require(isinstance(self.status, ServiceStatus), "status", "must be a ServiceStatus")
        require(is_int(self.generation) and is_int(self.max_queue),
                "generation", "generation and max_queue must be integers")
        if self.replica_of is not None:
            require_text(self.replica_of, "replica_of")


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


# -- applying a new configuration to a running system ----------------------------------
@dataclass(frozen=True)
class ApplyConfig(Message):
    """Host -> supervisor: change the running system to ``config`` (a plain dict, as
    for StartSystem). The whole config is validated and planned first; a config that
    fails, or a change that cannot be made while running, is refused and nothing
    changes. ``dry_run``: answer with the plan only. Answered with ApplyReport once
    done (new services online, traffic moved, replaced ones drained and stopped), or
    an ErrorReply: CONFIG_ERROR (refused), CONFLICT (another apply is running),
    INIT_ERROR (a new service did not come up; the old ones kept serving)."""

    config: Mapping[str, Any]
    dry_run: bool = False
    drain_s: float = 10.0   # how long replaced and removed services may finish their tasks

    def validate(self) -> None:
        require(isinstance(self.config, Mapping), "config", "must be a mapping")
        require(isinstance(self.dry_run, bool), "dry_run", "must be true or false")
        require_seconds(self.drain_s, "drain_s", allow_none=False)


@dataclass(frozen=True)
class PlanStep(Message):
    """One step of an apply's plan: ``action`` start | replace | update | stop | route |
    set | restart, on ``target`` (a service id, a task type, or a dotted key)."""

    action: str
    target: str
    detail: str = ""

    def validate(self) -> None:
        require_text(self.action, "action")
        require_text(self.target, "target", max_len=1024)
        require(isinstance(self.detail, str), "detail", "must be a string")

    def line(self) -> str:
        return f"{self.action:<8} {self.target}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class ApplyReport(Message):
    steps: tuple[PlanStep, ...]
    applied: bool              # False for a dry run, and when there was nothing to change
    dry_run: bool = False

    def validate(self) -> None:
        require(isinstance(self.steps, tuple) and all(isinstance(s, PlanStep) for s in self.steps),
                "steps", "must be a tuple of PlanStep")


@dataclass(frozen=True)
class ApplyRoutes(Message):
    """Supervisor -> router, when an apply moves traffic: the whole new route table,
    the entries of the new and replacing services (each replaces whatever generation
    the router had) and the removed services, in one message, so that no task sees
    half of it. The router answers RoutesApplied once the tasks it had sent to the
    replaced or removed generations are answered (or ``drain_s`` has passed): from
    then on nothing is sent to them, and they can be shut down."""

    routes: Mapping[str, Any]
    fetch_context: frozenset[str]
    default_timeout_s: float
    directory: tuple[ServiceDirectoryUpdate, ...] = ()
    removed: tuple[str, ...] = ()
    drain_s: float = 10.0
    ref: int = 0
    token: str = ""

    def validate(self) -> None:
        _require_table(self)
        require(isinstance(self.removed, tuple) and all(isinstance(n, str) for n in self.removed),
                "removed", "must be a tuple of service ids")
        require_seconds(self.default_timeout_s, "default_timeout_s", allow_none=False)
        require_seconds(self.drain_s, "drain_s", allow_none=False)
        require(is_int(self.ref), "ref", "must be an integer")


@dataclass(frozen=True)
class ConfigApplied(Message):
    """Supervisor -> its launcher: the running config is now ``config`` (an apply moved
    traffic to it); should the launcher start the runtime again, it starts this one."""

    config: Mapping[str, Any]

    def validate(self) -> None:
        require(isinstance(self.config, Mapping), "config", "must be a mapping")


@dataclass(frozen=True)
class RoutesApplied(Message):
    ref: int = 0
    answered_with_timeout: int = 0  # tasks of the old generations still unanswered at drain_s
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
