"""Structured logging through the standard ``logging`` module, in every process.

structlog builds each event (level, timestamp, pid, and what the code bound:
``task_id``, ``service``, ...); ``logging`` delivers it, so whoever owns a
process decides where its lines go, with ordinary handlers.

- The host API never configures the process it is embedded in: it logs to the
  standard logger ``grym.host`` (``host_logger``), and the host's own handlers
  on ``grym`` (or on the root) take it from there.
- The runtime's processes are ours. The launcher calls ``configure_logging``:
  one handler writes JSON lines to the log file (a ``WatchedFileHandler``,
  which reopens the file when logrotate has moved it) or readable lines to
  stderr in the foreground. Thespian replaces the root logger of its admin and
  of every actor process with a forwarder to a logger process of its own,
  which it configures with the same handler (``ActorSystem(logDefs=...)``);
  so every line, other libraries' and Thespian's included, comes out of that
  one handler in the same form.
- The forwarder turns each record's message into a string on its way, so the
  event rides on the record as JSON (``EVENT_ATTR``), and the handler's
  formatter renders it.

``configure_logging`` also marks the environment (``ENV``): a process started
with spawn or forkserver, which inherits no configuration, sets up structlog
when it imports this module; its level and handler come from Thespian, which
passes the same logging configuration to every child it starts.
"""
from __future__ import annotations

import json
import logging
import logging.config
import os
from datetime import datetime, timezone
from typing import Any

import structlog

ENV = "GRYM_LOGGING"
HOST_LOGGER = "grym.host"
EVENT_ATTR = "grym_event"
# Fields that a LogRecord carries itself, or that are too long for a message line.
_NOT_IN_MESSAGE = frozenset({"event", "level", "timestamp", "pid", "exception"})
_json = structlog.processors.JSONRenderer()


def configure_logging(path: str | None = None, fmt: str = "json",
                      level: str = "info") -> dict[str, Any]:
    """Log this process (a launcher) as JSON lines (``fmt="json"``) or readable
    console lines, to ``path`` (stderr if None). Returns the logging
    configuration, for Thespian's logger process (``ActorSystem(logDefs=...)``)."""
    os.environ[ENV] = "1"
    config = log_config(path, fmt, level)
    logging.config.dictConfig(config)
    configure_structlog()
    return config


def log_config(path: str | None, fmt: str, level: str) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` of a runtime process: one handler on the root."""
    handler: dict[str, Any] = (
        {"class": "logging.handlers.WatchedFileHandler", "filename": path, "encoding": "utf-8"}
        if path else {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"grym": {"()": f"{__name__}.formatter", "fmt": fmt}},
        "handlers": {"grym": {**handler, "formatter": "grym"}},
        "root": {"level": level.upper(), "handlers": ["grym"]},
    }


def formatter(fmt: str = "json") -> logging.Formatter:
    """Renders a runtime event (from ``EVENT_ATTR``) or any other record with the same fields."""
    renderer = (structlog.processors.JSONRenderer() if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=False))
    # ConsoleRenderer lays out a traceback itself; JSON needs it as a string.
    exceptions = [structlog.processors.format_exc_info] if fmt == "json" else []
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[_event_of_record],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *exceptions,
                    renderer])


def configure_structlog() -> None:
    """structlog's chain in a runtime process: the event is built here, delivered by ``logging``."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,   # before any work, by the logger's level
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _add_pid,
            structlog.processors.format_exc_info,
            _to_record,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def host_logger(name: str = HOST_LOGGER) -> Any:
    """A structlog logger over the standard logger ``name``, whatever structlog's
    global configuration is: the host API logs with it and configures nothing."""
    return structlog.wrap_logger(
        logging.getLogger(name), wrapper_class=structlog.stdlib.BoundLogger,
        processors=[structlog.stdlib.filter_by_level, structlog.contextvars.merge_contextvars,
                    _to_record])


def _add_pid(_logger, _method, event: dict) -> dict:
    event["pid"] = os.getpid()
    return event


def _to_record(_logger, _method, event: dict) -> tuple[tuple[str], dict[str, Any]]:
    """The arguments of the ``logging`` call: the event and its fields as the
    message, for any handler; the whole event as JSON on the record, for ours."""
    exc_info = event.pop("exc_info", None)
    fields = (f"{key}={value!r}" for key, value in event.items() if key not in _NOT_IN_MESSAGE)
    message = " ".join([str(event.get("event")), *fields])
    kwargs: dict[str, Any] = {"extra": {EVENT_ATTR: _json(None, "", event)}}
    if exc_info:
        kwargs["exc_info"] = exc_info
    return (message,), kwargs


def _event_of_record(_logger, _method, event: dict) -> dict:
    """ProcessorFormatter's first step: the event a runtime process built, or the
    same fields read from a record of another library (or of Thespian)."""
    record: logging.LogRecord = event["_record"]
    built = getattr(record, EVENT_ATTR, None)
    if built is not None:
        return {**json.loads(built), "_record": record, "_from_structlog": True}
    event.update(level=record.levelname.lower(), logger=record.name, pid=record.process,
                 timestamp=datetime.fromtimestamp(record.created, timezone.utc)
                 .strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    if record.exc_text and "exc_info" not in event:
        event["exception"] = record.exc_text  # Thespian's forwarder formatted it already
    return event


if os.environ.get(ENV):
    configure_structlog()
