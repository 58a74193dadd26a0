"""One set of error codes for the whole system, and the matching exceptions.

Actors never raise across a message boundary: they answer with an `ErrorInfo`.
The host API turns an `ErrorInfo` back into the exception of the same code, so
a Python caller can `except Overloaded:` or `except GrymError:`.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Mapping


class ErrorCode(str, enum.Enum):
    SERVICE_NOT_FOUND = "SERVICE_NOT_FOUND"
    INVALID_INPUT = "INVALID_INPUT"
    INVALID_TASK_TYPE = "INVALID_TASK_TYPE"
    TIMEOUT = "TIMEOUT"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"
    OVERLOADED = "OVERLOADED"
    EXECUTION_ERROR = "EXECUTION_ERROR"
    INIT_ERROR = "INIT_ERROR"
    NOT_FOUND = "NOT_FOUND"
    CONFLICT = "CONFLICT"
    SHUTTING_DOWN = "SHUTTING_DOWN"
    CONFIG_ERROR = "CONFIG_ERROR"


@dataclass(frozen=True)
class ErrorInfo:
    """A typed error as it travels in a message."""

    code: ErrorCode
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.code, ErrorCode):
            object.__setattr__(self, "code", ErrorCode(self.code))
        if not isinstance(self.message, str):
            object.__setattr__(self, "message", str(self.message))
        if not isinstance(self.details, Mapping):
            object.__setattr__(self, "details", {"value": repr(self.details)})

    def to_exception(self) -> "GrymError":
        return error_class(self.code)(self.message, dict(self.details))

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


class GrymError(Exception):
    """Base of every error the runtime reports."""

    code: ErrorCode = ErrorCode.EXECUTION_ERROR

    def __init__(self, message: str, details: Mapping[str, Any] | None = None):
        super().__init__(message)
        self.message = message
        self.details = dict(details or {})

    def info(self) -> ErrorInfo:
        return ErrorInfo(self.code, self.message, self.details)

    def __reduce__(self):  # keep message and details through pickling
        return (self.__class__, (self.message, self.details))


class ServiceNotFound(GrymError, LookupError):
    code = ErrorCode.SERVICE_NOT_FOUND


class InvalidInput(GrymError, ValueError):
    code = ErrorCode.INVALID_INPUT


class PermissionDenied(InvalidInput):
    """A control message from someone other than the actor that may send it."""


class InvalidTaskType(GrymError, ValueError):
    code = ErrorCode.INVALID_TASK_TYPE


class TaskTimeout(GrymError, TimeoutError):
    code = ErrorCode.TIMEOUT


class ServiceUnavailable(GrymError):
    code = ErrorCode.SERVICE_UNAVAILABLE


class Overloaded(GrymError):
    code = ErrorCode.OVERLOADED


class ExecutionError(GrymError):
    code = ErrorCode.EXECUTION_ERROR


class InitError(GrymError):
    code = ErrorCode.INIT_ERROR


class NotFound(GrymError, LookupError):
    code = ErrorCode.NOT_FOUND


class Conflict(GrymError):
    code = ErrorCode.CONFLICT


class ShuttingDown(GrymError):
    code = ErrorCode.SHUTTING_DOWN


class ConfigError(GrymError, ValueError):
    code = ErrorCode.CONFIG_ERROR


_BY_CODE = {cls.code: cls for cls in (
    ServiceNotFound, InvalidInput, InvalidTaskType, TaskTimeout, ServiceUnavailable,
    Overloaded, ExecutionError, InitError, NotFound, Conflict, ShuttingDown, ConfigError,
)}


def error_class(code: ErrorCode) -> type[GrymError]:
    return _BY_CODE[ErrorCode(code)]


RETRYABLE = "retryable"  # details key: the request may be sent again (see host.retry)


def retryable(message: str, details: Mapping[str, Any] | None = None) -> ServiceUnavailable:
    """SERVICE_UNAVAILABLE marked ``details["retryable"] = True``: the part of the runtime
    that was to answer went away (or is not back yet); sending the request again is safe
    when the request is idempotent."""
    return ServiceUnavailable(message, {**(details or {}), RETRYABLE: True})


def is_retryable(error: "GrymError | ErrorInfo") -> bool:
    return error.details.get(RETRYABLE) is True

