"""What the supervisor runs: each child's specification, as data, and what it
knows about each running child.

A ``ChildSpec`` is OTP's child specification: the actor class to start, the
factory of its set-up message, its restart type and its shutdown budget; and,
because the router must know where the others are, what the router learns
when a new generation starts or one is lost. The supervisor starts every child
the same way from its spec.
"""
from __future__ import annotations

import gc
import importlib
import os
import signal
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import psutil

from messages.base import Message
from messages.errors import ErrorCode
from messages.service import ConfigureService, ServiceStatus
from messages.system import (
    ContextMoved, ContextSetup, HealthCause, RouterSetup, ServiceDirectoryUpdate, ServiceInfo,
)

from services.registry import load_kind

from .config import WORKER_SHUTDOWN_S, RestartSettings, ServiceSpec, SystemConfig
from .health_policy import HealthTracker
from .restart_policy import RestartPolicy

# The core children's names; config refuses them as service names (RESERVED_NAMES).
ROUTER, CONTEXT = "router", "context"


@dataclass(frozen=True)
class SpawnEnv:
    """What a set-up message may need from the supervisor when a child starts."""

    config: SystemConfig
    token: str                                      # the supervisor's, for control messages
    core: Mapping[str, Any]                         # core child name -> its address now
    directory: tuple[ServiceDirectoryUpdate, ...]   # every service, as the router should know it


Lost = tuple[str, ErrorCode]  # why a generation went away, and what its callers get
SetupFactory = Callable[["Child", SpawnEnv], Message]
Announcer = Callable[["Child", str, "Lost | None"], "Message | None"]


@dataclass(frozen=True)
class ChildSpec:
    """How to start, stop and restart one child (OTP's child specification)."""

    name: str
    kind: str
    actor_class: str          # dotted path: the child's process imports it, whatever the start method
    setup: SetupFactory       # its first message
    announce: Announcer       # what the router learns of a new generation or a lost one (None: nothing)
    restart: RestartSettings  # restart type (permanent | transient | temporary) and intensity
    shutdown_s: float = WORKER_SHUTDOWN_S  # after a Shutdown's drain, this long to stop, then killed
    reports_status: bool = True  # says itself when it is online; False: online once set up
    service: ServiceSpec | None = None

    @property
    def max_memory(self) -> int | None:
        return self.service.max_memory if self.service else None


@dataclass
class Child:
    """One running (or restarting, or given up) child and what the supervisor knows of it."""

    spec: ChildSpec
    restart: RestartPolicy
    health: HealthTracker | None = None  # a new one for each generation, made at its start
    address: Any = None
    pid: int | None = None
    generation: int = 0
    status: ServiceStatus = ServiceStatus.OFFLINE
    was_initialized: bool = False        # restart it loaded, as it was
    last_error: str | None = None
    degraded_cause: HealthCause | None = None  # reported once per cause
    ending: str | None = None            # why it asked to end normally (ServiceStopped)
    waiters: list[Any] = field(default_factory=list)  # GetService callers waiting for init
    reported: bool = False               # this generation has answered its set-up
    # A config apply's (supervisor/rollout.py): started, not routed to yet; replaced or
    # removed, on its way out (never restarted).
    staged: bool = False
    retiring: bool = False
    # Where it runs (supervisor/placement.py): the member's name, and whether that is the
    # leader's own actor system, whose processes the supervisor may kill by pid.
    member: str | None = None
    local: bool = True
    unplaced: bool = False               # failed because no member met its requirements
    ongoing: int = 0                     # tasks queued or running, at its last heartbeat

    @classmethod
    def of(cls, spec: ChildSpec) -> "Child":
        return cls(spec, RestartPolicy(spec.restart))

    @property
    def name(self) -> str:
        return self.spec.name

    def info(self) -> ServiceInfo:
        service = self.spec.service
        return ServiceInfo(name=self.name, kind=self.spec.kind, status=self.status,
                           generation=self.generation, restarts=self.restart.total_restarts,
                           pid=self.pid, last_error=self.last_error,
                           task_timeout_s=service.task_timeout_s if service else None,
                           version=service.version if service else None,
                           address=self.address, member=self.member,
                           replica_of=service.replica_of if service else None)


# -- the specs ------------------------------------------------------------------------
def service_child(spec: ServiceSpec) -> ChildSpec:
    return ChildSpec(spec.name, spec.kind, "actors.service_actor.ServiceActor",
                     _configure_service, directory_entry, spec.restart,
                     shutdown_s=spec.shutdown_s, service=spec)


# The router and the context actor are always restarted; a burst of their
# crashes is logged loudly but never gives up on them. They stop with the
# actor system, so their shutdown budget is the default, unused.
_CORE_RESTART = RestartSettings(max_restarts=1_000_000, restart_period_s=60.0)


def core_children() -> tuple[ChildSpec, ...]:
    """In start order: the router's set-up carries the context actor's address."""
    return (
        ChildSpec(CONTEXT, CONTEXT, "actors.context_actor.ContextActor", _context_setup,
                  _context_moved, _CORE_RESTART, reports_status=False),
        ChildSpec(ROUTER, ROUTER, "actors.router.TaskRouter", _router_setup, _nothing,
                  _CORE_RESTART, reports_status=False),
    )


def _configure_service(child: Child, env: SpawnEnv) -> ConfigureService:
    spec = child.spec.service
    return ConfigureService(
        name=spec.name, kind=spec.kind, settings=spec.settings, max_queue=spec.max_queue,
        max_batch_size=spec.max_batch_size, max_batch_delay_ms=spec.max_batch_delay_ms,
        generation=child.generation, token=env.token,
        default_task_timeout_s=env.config.system.default_task_timeout_s,
        task_timeout_s=spec.task_timeout_s, max_memory=spec.max_memory, warmup=spec.warmup,
        # Load at once if it was loaded before, or a caller is waiting for it.
        eager=spec.eager or child.was_initialized or bool(child.waiters))


def _context_setup(child: Child, env: SpawnEnv) -> ContextSetup:
    return ContextSetup(settings=dict(env.config.context))


def _router_setup(child: Child, env: SpawnEnv) -> RouterSetup:
    cfg = env.config
    return RouterSetup(
        routes=dict(cfg.routes), context=env.core.get(CONTEXT), fetch_context=fetch_context(cfg),
        default_timeout_s=cfg.system.default_task_timeout_s, token=env.token,
        directory=env.directory)


def fetch_context(config: SystemConfig) -> frozenset[str]:
    """The services whose routed tasks get context fetched."""
    return frozenset(n for n, s in config.services.items() if s.fetch_context)


def preload(config: SystemConfig, services: Any = None) -> None:
    """Import the model libraries of the configured services' kinds (``services``: of
    those ids only) before forking them, so that a (re)started service starts warm.
    Never *run* them here: see the shared notes on the fork-after-torch hang."""
    for sid in config.services if services is None else services:
        for module in load_kind(config.services[sid].kind).preload_modules:
            importlib.import_module(module)
    # What is imported by now lives as long as the process: moved out of the garbage
    # collector's reach, a child's full collection (a model release) skips it. With
    # torch and transformers that is ~350,000 objects: 0.9 s down to 10 ms per release.
    gc.freeze()


def directory_entry(child: Child, token: str, lost: Lost | None = None) -> ServiceDirectoryUpdate:
    """Where a service is and whether it takes work; ``lost``: its generation is gone."""
    spec = child.spec.service
    return ServiceDirectoryUpdate(
        name=child.name, address=child.address, status=child.status,
        generation=child.generation, max_queue=spec.max_queue, kind=spec.kind,
        task_timeout_s=spec.task_timeout_s, lost_reason=lost[0] if lost else None,
        lost_code=lost[1].value if lost else None, token=token, retiring=child.retiring,
        replica_of=spec.replica_of)


def _context_moved(child: Child, token: str, lost: Lost | None = None) -> ContextMoved:
    return ContextMoved(child.address, child.generation, token=token)


def _nothing(child: Child, token: str, lost: Lost | None = None) -> None:
    return None  # the router learns everything in its own set-up


# -- processes ------------------------------------------------------------------------
def own_children() -> set[int]:
    """The pids of this process's child processes."""
    try:
        return {p.pid for p in psutil.Process().children()}
    except psutil.Error:
        return set()


def process_gone(pid: int | None) -> bool:
    """True when ``pid`` no longer runs (a zombie counts as gone)."""
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def kill_process(pid: int | None) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
