"""What the supervisor knows about each child it runs."""
from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import Any

import psutil

from messages.service import ServiceStatus
from messages.system import ServiceInfo

from .config import RestartSettings, ServiceSpec
from .health_policy import HealthTracker
from .restart_policy import RestartPolicy


@dataclass
class Child:
    """One supervised actor: a model service, the router or the context actor."""

    name: str
    role: str                          # "service", "router" or "context"
    restart: RestartPolicy
    health: HealthTracker | None       # a new one for each generation, made at its start
    spec: ServiceSpec | None = None    # services only
    address: Any = None
    pid: int | None = None
    generation: int = 0
    status: ServiceStatus = ServiceStatus.OFFLINE
    was_initialized: bool = False      # restart it loaded, as it was
    last_error: str | None = None
    degraded_cause: str | None = None  # first word of the reason, to report a new cause once
    waiters: list[Any] = field(default_factory=list)  # GetService callers waiting for init

    @classmethod
    def for_service(cls, spec: ServiceSpec) -> "Child":
        return cls(spec.name, "service", RestartPolicy(spec.restart), None, spec)

    @classmethod
    def for_core(cls, role: str) -> "Child":
        # The router and the context actor are always restarted; a burst of
        # their crashes is logged loudly but never gives up on them.
        policy = RestartPolicy(RestartSettings(max_restarts=1_000_000, restart_period_s=60.0))
        return cls(role, role, policy, None)

    @property
    def kind(self) -> str:
        return self.spec.kind if self.spec else self.role

    def info(self) -> ServiceInfo:
        return ServiceInfo(name=self.name, kind=self.kind, status=self.status,
                           generation=self.generation, restarts=self.restart.total_restarts,
                           pid=self.pid, last_error=self.last_error)


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
