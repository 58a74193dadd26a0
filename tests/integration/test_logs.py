"""Logs through the standard logging module: the host's own handlers, the runtime's file."""
from __future__ import annotations

import json
import logging
import os
import signal
from pathlib import Path

import pytest

from messages import Task
from tests.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


class Capture(logging.Handler):
    """What a host that embeds the runtime would attach: a plain logging handler."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def events(log_file: Path) -> list[dict]:
    if not log_file.exists():
        return []
    return [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]


def test_an_embedding_host_captures_the_host_api_log_with_its_own_handler(start_system):
    capture = Capture()
    logging.getLogger("grym").addHandler(capture)
    try:
        system = start_system({"services": {"echo": {"kind": "echo", "eager": True}}})

        def broken_callback(event):
            raise RuntimeError("the host's callback failed")

        system.health.on("service_restarted", broken_callback)
        os.kill(system.services()[0].pid, signal.SIGKILL)
        record = wait_until(lambda: next((r for r in capture.records
                                          if r.getMessage().startswith("health_callback_failed")),
                                         None), timeout=20)
    finally:
        logging.getLogger("grym").removeHandler(capture)
    assert record.name == "grym.host" and record.levelno == logging.ERROR
    assert "kind='service_restarted'" in record.getMessage()
    assert record.exc_info and "the host's callback failed" in str(record.exc_info[1])


def test_spawned_processes_write_json_lines_with_their_fields(start_system, tmp_path):
    # Spawned actors inherit no configuration: structlog from the environment,
    # the level and the handler from Thespian's logger process. A log directory of its
    # own: the default one is named by the port, which an earlier runtime may have used.
    system = start_system({"system": {"start_method": "spawn", "log_dir": str(tmp_path)},
                           "logging": {"level": "debug"},
                           "services": {"echo": {"kind": "echo", "eager": True}}})
    assert system.router.route_task(Task(id="logged-1", type="echo", data=1)).ok
    log_file = Path(system.info.log_dir, "grym.log")
    line = wait_until(lambda: next((e for e in events(log_file)
                                    if e.get("task_id") == "logged-1"), None), timeout=10)
    assert {"task_id", "service", "pid", "level", "timestamp", "event"} <= set(line), line
    assert line["service"] == "echo" and line["level"] == "debug"
    echo_pid = system.services()[0].pid
    online = [e for e in events(log_file) if e["event"] == "service_online"]
    assert online and online[0]["service"] == "echo" and online[0]["pid"] == echo_pid


def test_the_log_file_is_reopened_after_logrotate_moves_it(start_system, tmp_path):
    system = start_system({"system": {"log_dir": str(tmp_path)}, "logging": {"level": "debug"},
                           "services": {"echo": {"kind": "echo", "eager": True}}})
    log_file = Path(system.info.log_dir, "grym.log")
    assert system.router.route_task(Task(id="before", type="echo", data=1)).ok
    wait_until(lambda: any(e.get("task_id") == "before" for e in events(log_file)), timeout=10)
    rotated = log_file.with_name("grym.log.1")
    log_file.rename(rotated)  # what logrotate does (without copytruncate)
    assert system.router.route_task(Task(id="after", type="echo", data=2)).ok
    wait_until(lambda: any(e.get("task_id") == "after" for e in events(log_file)), timeout=10)
    assert not any(e.get("task_id") == "after" for e in events(rotated))
