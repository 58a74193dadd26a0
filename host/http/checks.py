"""Checks of the [http] table made before anything starts (no web framework imported:
the launcher forks the actor system after these)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from messages.errors import ConfigError

from host.launcher import HTTP_PORT_OFFSET, PortInUse, metrics_port, port_in_use


def read_token(path: str | None) -> str | None:
    """The token in ``path`` (surrounding whitespace dropped); a ConfigError naming
    ``http.token_file`` when it cannot be read or is empty."""
    if path is None:
        return None
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise ConfigError(f"http.token_file: cannot read {path}: {exc.strerror}",
                          {"key": "http.token_file"}) from None
    if len(token) < 16:
        raise ConfigError(f"http.token_file: {path} must hold a token of at least 16 characters",
                          {"key": "http.token_file"})
    return token


def http_port(config: Any) -> int:
    return config.http.port or config.system.admin_port + HTTP_PORT_OFFSET


def check_http_table(config: Any) -> None:
    """What a config file alone can get wrong (``run.py check-config`` too): a port
    shared with the admin or the metrics endpoint, a token file that cannot be read."""
    settings = config.http
    if not settings.enabled:
        return
    port = http_port(config)
    others = {config.system.admin_port: "system.admin_port"}
    if config.metrics.enabled:
        others[metrics_port(config)] = "metrics.port"
    if port in others:
        raise ConfigError(f"http.port: {port} is also {others[port]}; choose another",
                          {"key": "http.port"})
    read_token(settings.token_file)  # HttpSettings requires one off loopback


def check_http(config: Any) -> None:
    """At start: ``check_http_table``, and the port must be free."""
    check_http_table(config)
    settings = config.http
    port = http_port(config)
    if settings.enabled and port_in_use(settings.bind_address, port):
        raise PortInUse(f"http.port: port {port} is already in use (set [http] port, or "
                        "enabled = false)", {"key": "http.port"})
