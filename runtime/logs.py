"""Structured logging for every process of the runtime.

The launcher calls ``configure_logging`` before it starts the actor system;
forked actor processes inherit it. The settings also travel in environment
variables, so a process started with spawn or forkserver configures itself
the same way when this module is imported.
"""
from __future__ import annotations

import logging
import os
import sys

import structlog

_ENV_FILE, _ENV_FORMAT, _ENV_LEVEL = "GRYM_LOG_FILE", "GRYM_LOG_FORMAT", "GRYM_LOG_LEVEL"
_configured_pid: int | None = None


def configure_logging(path: str | None = None, fmt: str = "json", level: str = "info") -> None:
    """JSON lines (``fmt="json"``) or readable console lines to ``path`` (stderr if None)."""
    global _configured_pid
    os.environ[_ENV_FORMAT], os.environ[_ENV_LEVEL] = fmt, level
    if path:
        os.environ[_ENV_FILE] = path
    stream = open(path, "a", buffering=1, encoding="utf-8") if path else sys.stderr
    renderer = (structlog.processors.JSONRenderer() if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=False))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_pid,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    _configured_pid = os.getpid()


def _add_pid(_logger, _method, event: dict) -> dict:
    event["pid"] = os.getpid()
    return event


if _configured_pid is None and os.environ.get(_ENV_FORMAT):
    configure_logging(os.environ.get(_ENV_FILE), os.environ[_ENV_FORMAT],
                      os.environ.get(_ENV_LEVEL, "info"))
