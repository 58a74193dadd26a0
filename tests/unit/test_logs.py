"""Logging through the standard module, and ``run.py logs --follow`` (no actors)."""
from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from host.launcher import project_env
from runtime.logs import EVENT_ATTR, HOST_LOGGER, formatter, host_logger, log_config


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def captured():
    capture, logger = Capture(), logging.getLogger("grym")
    logger.addHandler(capture)
    logger.setLevel(logging.WARNING)  # as a host would; the runtime sets no level here
    yield capture.records
    logger.removeHandler(capture)
    logger.setLevel(logging.NOTSET)


def test_the_host_api_logs_to_the_grym_logger_with_its_fields(captured):
    host_logger().warning("graceful_shutdown_failed", error="no answer", task_id="t1")
    host_logger().debug("stale_reply_dropped")  # below the level the host set (WARNING)
    assert len(captured) == 1
    record = captured[0]
    assert record.name == HOST_LOGGER and record.levelno == logging.WARNING
    assert record.getMessage() == "graceful_shutdown_failed error='no answer' task_id='t1'"
    assert json.loads(getattr(record, EVENT_ATTR)) == {
        "event": "graceful_shutdown_failed", "error": "no answer", "task_id": "t1"}


def test_a_runtime_event_is_rendered_from_the_record_as_one_json_line():
    record = logging.LogRecord("actors.router", logging.INFO, __file__, 1, "task_answered", (),
                               None)
    event = {"task_id": "t1", "service": "echo", "event": "task_answered", "level": "info",
             "timestamp": "2026-01-01T00:00:00.000000Z", "pid": 42}
    setattr(record, EVENT_ATTR, json.dumps(event))
    assert json.loads(formatter("json").format(record)) == event


def test_a_foreign_record_gets_the_same_fields():
    # As Thespian's forwarder delivers it: message and traceback already strings.
    record = logging.LogRecord("transformers", logging.WARNING, __file__, 1, "weights %s",
                               ("missing",), None)
    record.exc_text, record.process = "Traceback ...\nValueError: x", 4242
    line = json.loads(formatter("json").format(record))
    assert line["event"] == "weights missing" and line["level"] == "warning"
    assert line["pid"] == 4242 and line["logger"] == "transformers"
    assert line["exception"].endswith("ValueError: x") and line["timestamp"].endswith("Z")
    console = formatter("console").format(record)
    assert "weights missing" in console and "warning" in console


def test_the_file_handler_survives_logrotate_and_feeds_thespian(tmp_path: Path):
    config = log_config(str(tmp_path / "grym.log"), "json", "debug")
    assert config["handlers"]["grym"]["class"] == "logging.handlers.WatchedFileHandler"
    from thespian.system.multiprocCommon import get_min_log_level
    assert get_min_log_level(config) == logging.DEBUG  # actors forward debug lines too
    assert log_config(None, "console", "info")["handlers"]["grym"]["stream"] == "ext://sys.stderr"


def test_logs_follow_prints_new_lines_across_a_rotation(tmp_path: Path):
    (tmp_path / "grym.toml").write_text('[system]\nlog_dir = "logs"\n')
    log_file = tmp_path / "logs" / "grym.log"
    log_file.parent.mkdir()
    log_file.write_text('{"event": "old"}\n')
    follower = subprocess.Popen(
        [sys.executable, "run.py", "logs", "--follow", "--config", str(tmp_path / "grym.toml")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=project_env(),
        cwd=Path(__file__).resolve().parents[2])
    lines: queue.SimpleQueue = queue.SimpleQueue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout],
                     daemon=True).start()

    def next_event(timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line.startswith("{"):
                return json.loads(line)["event"]
        raise AssertionError("no new line from logs --follow")

    def append(path: Path, event: str) -> None:
        with open(path, "a") as out:
            out.write(json.dumps({"event": event}) + "\n")

    try:
        assert lines.get(timeout=15).startswith("logs: ")  # it is up, at the end of the file
        time.sleep(0.5)
        append(log_file, "one")
        assert next_event() == "one"  # not "old": it starts at the end
        os.rename(log_file, tmp_path / "logs" / "grym.log.1")  # logrotate
        append(tmp_path / "logs" / "grym.log.1", "late")  # a writer that has not reopened yet
        time.sleep(0.5)
        append(log_file, "two")  # the new file
        assert [next_event(), next_event()] == ["late", "two"]
        log_file.write_text("")  # truncated in place (copytruncate)
        time.sleep(0.5)
        append(log_file, "3")
        assert next_event() == "3"
    finally:
        follower.terminate()
        follower.wait(10)
