"""Tasks and their results: what a caller sends and what it always gets back."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from .base import Message
from .errors import ErrorInfo
from .validation import is_int, require, require_seconds, require_text

PRIORITY_MIN, PRIORITY_MAX = 1, 10


@dataclass(frozen=True)
class Task(Message):
    """A unit of work. ``type`` picks the route; ``data`` is the payload."""

    id: str
    type: str
    data: Any = None
    priority: int = 5
    timeout_s: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] | None = None
    store_results: bool = False

    def validate(self) -> None:
        require_text(self.id, "id")
        require_text(self.type, "type", 128)
        require(is_int(self.priority) and PRIORITY_MIN <= self.priority <= PRIORITY_MAX, "priority",
                f"must be an integer from {PRIORITY_MIN} to {PRIORITY_MAX}, got {self.priority!r:.40}")
        require_seconds(self.timeout_s, "timeout_s")
        require(isinstance(self.metadata, Mapping), "metadata", "must be a mapping")
        require(self.context is None or isinstance(self.context, Mapping), "context",
                "must be a mapping or None")
        require(isinstance(self.store_results, bool), "store_results", "must be a bool")

    def with_context(self, context: Mapping[str, Any]) -> "Task":
        return replace(self, context=dict(context))


def effective_timeout_s(task: Task, service_timeout_s: float | None, default_s: float) -> float:
    """The one deadline rule: the task's own ``timeout_s``, else its service's
    ``task_timeout_s``, else the system's ``default_task_timeout_s``.

    The router gives an accepted task this long; a service takes a task sent
    to it directly for this long; a host waits this long (plus the hops).
    """
    return task.timeout_s or service_timeout_s or default_s


class TaskStatus(str, enum.Enum):
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True)
class TaskMetrics:
    """Where a task's time went, in milliseconds.

    ``queue_ms`` and ``execution_ms`` are measured inside the service process,
    ``context_fetch_ms`` and ``total_ms`` in the router; ``routing_ms`` is the
    rest of ``total_ms``: the router's own work and the message hops.
    """

    routing_ms: float = 0.0
    context_fetch_ms: float = 0.0
    queue_ms: float = 0.0
    execution_ms: float = 0.0
    total_ms: float = 0.0
    batch_size: int = 1


@dataclass(frozen=True)
class TaskResult(Message):
    task_id: str
    status: TaskStatus
    data: Any = None
    error: ErrorInfo | None = None
    metrics: TaskMetrics = field(default_factory=TaskMetrics)

    def validate(self) -> None:
        require(isinstance(self.status, TaskStatus), "status", "must be a TaskStatus")
        require((self.error is None) == (self.status is TaskStatus.COMPLETED), "error",
                "a failed result carries an ErrorInfo, a completed one none")

    @property
    def ok(self) -> bool:
        return self.status is TaskStatus.COMPLETED

    def unwrap(self) -> Any:
        """The result data, or the typed exception (messages.errors) of a failed task."""
        if self.error is not None:
            raise self.error.to_exception()
        return self.data

    @classmethod
    def success(cls, task_id: str, data: Any, metrics: TaskMetrics | None = None) -> "TaskResult":
        return cls(task_id, TaskStatus.COMPLETED, data, None, metrics or TaskMetrics())

    @classmethod
    def failure(cls, task_id: str, error: ErrorInfo,
                metrics: TaskMetrics | None = None) -> "TaskResult":
        return cls(task_id, TaskStatus.FAILED, None, error, metrics or TaskMetrics())

    def with_metrics(self, **changes: float) -> "TaskResult":
        return replace(self, metrics=replace(self.metrics, **changes))
