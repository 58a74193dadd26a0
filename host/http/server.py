"""The HTTP face, served by the launcher beside ``/metrics``: uvicorn on a thread.

``checks.check_http`` runs before the actor system starts (a taken port, an
unreadable token file: the daemon refuses to start; ``HttpSettings`` refuses a
non-loopback address without a token). ``HttpServer`` follows the launcher's
runtime restarts (``retarget``); on the way out it ``drain``s before the runtime
does (new requests refused, event streams ended, running ones answered by the
runtime's own drain) and ``stop``s after.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import structlog
import uvicorn

from messages.errors import ConfigError
from messages.system import SystemInfo

from host.launcher import release_in_children
from host.system import ServiceSystem

from .app import create_app
from .checks import http_port, read_token
from .state import HttpState

log = structlog.get_logger()
START_TIMEOUT_S = 10.0
GRACE_S = 5.0  # requests in flight at a stop get this long to be answered


def host_handle(asys: Any, info: SystemInfo, config: Any) -> Any:
    """A host API handle on the actor system this launcher runs (no second join)."""
    return ServiceSystem(asys, info, config, None, None, owned=False)


class HttpServer:
    def __init__(self, config: Any, asys: Any, info: SystemInfo):
        settings = config.http
        token = read_token(settings.token_file)
        self.config = config
        self.address, self.port = settings.bind_address, http_port(config)
        # Ready: each eager service serves on its first replica (others come and go).
        self.state = HttpState((n for n, s in config.services.items()
                                if s.eager and s.replica_of is None), token,
                               settings.max_body_bytes)
        self.state.attach(host_handle(asys, info, config))
        self._server = uvicorn.Server(uvicorn.Config(
            create_app(self.state), host=self.address, port=self.port, log_config=None,
            access_log=False, lifespan="off", server_header=False, proxy_headers=False,
            timeout_graceful_shutdown=GRACE_S, ws="none"))
        self._thread = threading.Thread(target=self._server.run, name="grym-http", daemon=True)

    def start(self) -> "HttpServer":
        release_in_children(self.port)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.state.close()
                raise ConfigError(f"http.port: cannot serve HTTP on {self.address}:{self.port}",
                                  {"key": "http.port"})
            time.sleep(0.01)
        log.info("http_serving", address=self.address, port=self.port)
        return self

    def retarget(self, asys: Any, info: SystemInfo) -> None:
        """After the launcher restarted the runtime: open streams end (clients resume)."""
        self.state.attach(host_handle(asys, info, self.config))

    def drain(self) -> None:
        """Before the runtime drains: new requests get SHUTTING_DOWN, event streams end,
        and requests already running wait for their answers."""
        self.state.closing = "shutting down"

    def stop(self) -> None:
        """Close the port (requests still running get GRACE_S more) and the handle."""
        self.drain()
        self._server.should_exit = True
        self._thread.join(GRACE_S + 5)
        self.state.close()

