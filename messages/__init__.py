"""Every message the runtime sends: frozen dataclasses, validated when built."""
from .errors import (  # noqa: F401
    Conflict, ConfigError, ErrorCode, ErrorInfo, ExecutionError, GrymError, InitError,
    InvalidInput, InvalidTaskType, NotFound, Overloaded, ServiceNotFound, ServiceUnavailable,
    ShuttingDown, TaskTimeout,
)
from .task import Task, TaskMetrics, TaskResult, TaskStatus  # noqa: F401
