"""SIGHUP: the daemon's launcher re-reads its config file and applies it.

The same as ``run.py apply FILE``, by signal (``systemctl reload grym``): the file
is read as ``run.py start`` read it (daemon defaults, relative paths, the running
admin port), and the supervisor applies it; a bad file, or a change the running
system cannot take, is refused whole and logged with its key and line. The apply
runs on a thread of its own, with its own endpoint, so the launcher keeps
watching the runtime meanwhile.

The supervisor tells the launcher each config it has applied (ConfigApplied, by
``run.py apply`` or the host API too): should the launcher have to start the
runtime again, it starts it with that one.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Mapping

import structlog

from messages.errors import GrymError
from messages.system import ApplyConfig, ApplyReport, ErrorReply
from supervisor.config import SystemConfig

APPLY_MARGIN_S = 30.0  # past the new config's start timeout and the drain


class Reloader:
    def __init__(self, source: str | None, config: SystemConfig):
        self.source = Path(source) if source else None
        self.config = config                 # the running one: what a restart starts
        self.requested = False
        self._thread: threading.Thread | None = None

    def on_sighup(self, signum: int, frame: Any) -> None:
        self.requested = True  # a signal handler does no more; ``poll`` acts on it

    def poll(self, asys: Any, supervisor: Any) -> None:
        """Called from the launcher's loop: start an apply if SIGHUP asked for one."""
        if not self.requested:
            return
        self.requested = False
        log = structlog.get_logger()
        if self.source is None:
            log.warning("reload_ignored", reason="no config file: the runtime was not started "
                                                 "from one (run.py start --config FILE)")
        elif self._thread is not None and self._thread.is_alive():
            log.warning("reload_ignored", reason="an apply from the last SIGHUP is still running")
        else:
            self._thread = threading.Thread(target=self._apply, args=(asys, supervisor),
                                            name="grym-reload", daemon=True)
            self._thread.start()

    def applied(self, raw: Mapping[str, Any]) -> None:
        """The supervisor applied ``raw``: a restart of the runtime starts with it."""
        try:
            self.config = SystemConfig.from_dict(raw)
        except GrymError as exc:  # it was valid in the supervisor; keep the last one here
            structlog.get_logger().error("applied_config_unreadable", error=exc.message)

    def _apply(self, asys: Any, supervisor: Any) -> None:
        from .cli import daemon_raw  # the CLI's reading of a config file (not at import: a cycle)
        log = structlog.get_logger()
        try:
            raw = daemon_raw(self.source, self.config.system.admin_port)
            wait = SystemConfig.from_dict(raw).system.start_timeout_s + 10.0 + APPLY_MARGIN_S
            log.info("reload_started", file=str(self.source))
            with asys.private() as endpoint:
                reply = endpoint.ask(supervisor, ApplyConfig(raw), wait)
        except GrymError as exc:
            log.error("reload_refused", file=str(self.source), error=exc.message)
            return
        except Exception as exc:  # noqa: BLE001 - e.g. the runtime is restarting
            log.error("reload_failed", file=str(self.source), error=f"{type(exc).__name__}: {exc}")
            return
        if isinstance(reply, ApplyReport):
            log.info("reload_applied" if reply.applied else "reload_nothing_to_change",
                     file=str(self.source), steps=[s.line() for s in reply.steps])
        elif isinstance(reply, ErrorReply):
            log.error("reload_refused", file=str(self.source), code=reply.error.code.value,
                      error=reply.error.message)
        else:
            log.error("reload_unanswered", file=str(self.source), timeout_s=wait)
