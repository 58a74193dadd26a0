"""The runtime's configuration: plain dicts (from TOML or code) -> validated dataclasses.

Every error is a ConfigError whose message starts with the dotted key, e.g.
``services.asr.max_memory: expected a positive size such as '2GB', got '-1GB'``.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from messages.errors import ConfigError
from services.registry import load_kind
from services.settings import build_settings, check, is_number, parse_size

RESTART_TYPES = ("permanent", "transient", "temporary")
START_METHODS = ("fork", "forkserver", "spawn")

DEFAULT_ROUTES = {
    "echo": "echo",
    "audio_process": "wav2vec2",
    "audio_analyze": "wav2vec2",
    "speech-to-text": "wav2vec2",
    "audio-feature-extraction": "wav2vec2",
}


@dataclass(frozen=True)
class SystemSettings:
    admin_port: int = 19500
    # Thespian binds every socket to all interfaces unless we say otherwise;
    # anything that can reach a port can make the process unpickle data.
    bind_address: str = "127.0.0.1"
    start_method: str = "fork"
    default_task_timeout_s: float = 30.0
    start_timeout_s: float = 60.0
    log_dir: str | None = None

    def __post_init__(self) -> None:
        check(isinstance(self.admin_port, int) and 1024 <= self.admin_port <= 65535, "admin_port",
              "must be an integer from 1024 to 65535")
        _check_address(self.bind_address)
        check(self.start_method in START_METHODS, "start_method",
              f"must be one of {', '.join(START_METHODS)}")
        check(is_number(self.default_task_timeout_s) and self.default_task_timeout_s > 0,
              "default_task_timeout_s", "must be > 0")
        check(is_number(self.start_timeout_s) and self.start_timeout_s > 0, "start_timeout_s",
              "must be > 0")


@dataclass(frozen=True)
class HealthSettings:
    heartbeat_interval_s: float = 0.25
    missed_heartbeats: int = 4          # this many unanswered in a row: unhealthy
    hang_grace_s: float = 0.5           # a batch this long past its deadline: hung
    degrade_error_rate: float = 0.5     # over the last window of requests
    degrade_min_requests: int = 20
    startup_timeout_s: float = 60.0     # a child silent this long after it started: killed

    def __post_init__(self) -> None:
        check(is_number(self.heartbeat_interval_s) and 0.01 <= self.heartbeat_interval_s <= 60,
              "heartbeat_interval_s", "must be between 0.01 and 60 seconds")
        check(isinstance(self.missed_heartbeats, int) and self.missed_heartbeats >= 1,
              "missed_heartbeats", "must be an integer >= 1")
        check(is_number(self.hang_grace_s) and self.hang_grace_s >= 0, "hang_grace_s",
              "must be >= 0")
        check(is_number(self.degrade_error_rate) and 0 < self.degrade_error_rate <= 1,
              "degrade_error_rate", "must be in (0, 1]")
        check(isinstance(self.degrade_min_requests, int) and self.degrade_min_requests >= 1,
              "degrade_min_requests", "must be an integer >= 1")
        check(is_number(self.startup_timeout_s) and self.startup_timeout_s > 0,
              "startup_timeout_s", "must be > 0")


@dataclass(frozen=True)
class RestartSettings:
    restart: str = "permanent"      # permanent: always; transient: after a crash only; temporary: never
    max_restarts: int = 5           # at most this many restarts ...
    restart_period_s: float = 30.0  # ... within this many seconds, else failed
    backoff_initial_s: float = 0.05  # the first restart is immediate, then this, doubling
    backoff_max_s: float = 5.0
    backoff_jitter: float = 0.2     # +-20 % so restarts of many services do not align

    def __post_init__(self) -> None:
        check(self.restart in RESTART_TYPES, "restart", f"must be one of {', '.join(RESTART_TYPES)}")
        check(isinstance(self.max_restarts, int) and self.max_restarts >= 0, "max_restarts",
              "must be an integer >= 0")
        for key in ("restart_period_s", "backoff_initial_s", "backoff_max_s"):
            value = getattr(self, key)
            check(is_number(value) and value > 0, key, "must be > 0")
        check(is_number(self.backoff_jitter) and 0 <= self.backoff_jitter < 1, "backoff_jitter",
              "must be in [0, 1)")


@dataclass(frozen=True)
class MetricsSettings:
    """The Prometheus endpoint the launcher serves (the daemon turns it on)."""

    enabled: bool = False
    port: int | None = None          # default: the admin port + 1
    bind_address: str = "127.0.0.1"
    scrape_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        check(isinstance(self.enabled, bool), "enabled", "must be true or false")
        check(self.port is None or (isinstance(self.port, int) and 1024 <= self.port <= 65535),
              "port", "must be an integer from 1024 to 65535")
        _check_address(self.bind_address)
        check(is_number(self.scrape_timeout_s) and self.scrape_timeout_s > 0, "scrape_timeout_s",
              "must be > 0")


@dataclass(frozen=True)
class LoggingSettings:
    level: str = "info"
    format: str | None = None        # json | console; default: json to a file, console in front

    def __post_init__(self) -> None:
        check(self.level in ("debug", "info", "warning", "error"), "level",
              "must be one of debug, info, warning, error")
        check(self.format in (None, "json", "console"), "format", "must be json or console")


def _check_address(address: object) -> None:
    try:
        ipaddress.ip_address(address)  # type: ignore[arg-type]
    except (ValueError, TypeError):
        raise ConfigError(f"bind_address: must be an IP address, got {address!r}",
                          {"key": "bind_address"}) from None


# Keys of a [services.NAME] table that belong to the runtime, not to the kind.
@dataclass(frozen=True)
class ServiceSpec:
    name: str
    kind: str
    settings: Any                     # the kind's own Settings dataclass
    restart: RestartSettings
    eager: bool = False
    max_queue: int = 64
    max_batch_size: int = 1
    max_batch_delay_ms: float = 0.0
    task_timeout_s: float | None = None
    max_memory: int | None = None     # bytes; above it the service is degraded
    fetch_context: bool = True


_SPEC_KEYS = {"kind", "eager", "max_queue", "max_batch_size", "max_batch_delay_ms",
              "task_timeout_s", "max_memory", "fetch_context"}
_RESTART_KEYS = {f.name for f in dataclasses.fields(RestartSettings)}


def _service_spec(name: str, table: Mapping[str, Any], restart_defaults: Mapping[str, Any]) -> ServiceSpec:
    where = f"services.{name}"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table", {"key": where})
    check_key = lambda ok, key, problem: check(ok, f"{where}.{key}", problem)  # noqa: E731
    check_key(isinstance(table.get("kind"), str), "kind", "is required (a service kind such as 'echo')")
    try:
        kind_cls = load_kind(table["kind"])
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc.message}", {"key": f"{where}.kind"}) from None
    kind_fields = {f.name for f in dataclasses.fields(kind_cls.Settings)}
    common = {k: v for k, v in table.items() if k in _SPEC_KEYS}
    restart = {**restart_defaults, **{k: v for k, v in table.items() if k in _RESTART_KEYS}}
    # Keys the kind declares too (max_batch_size, max_memory...) reach both.
    own = {k: v for k, v in table.items()
           if k in kind_fields or (k not in _SPEC_KEYS and k not in _RESTART_KEYS)}
    settings = build_settings(kind_cls.Settings, own, where)
    max_memory = common.get("max_memory")
    spec = dict(
        eager=common.get("eager", False),
        max_queue=common.get("max_queue", 64),
        max_batch_size=common.get("max_batch_size", 1),
        max_batch_delay_ms=common.get("max_batch_delay_ms", 0.0),
        task_timeout_s=common.get("task_timeout_s"),
        fetch_context=common.get("fetch_context", True),
    )
    check_key(isinstance(spec["eager"], bool), "eager", "must be true or false")
    check_key(isinstance(spec["fetch_context"], bool), "fetch_context", "must be true or false")
    check_key(isinstance(spec["max_queue"], int) and not isinstance(spec["max_queue"], bool)
              and spec["max_queue"] >= 1, "max_queue", "must be an integer >= 1")
    check_key(isinstance(spec["max_batch_size"], int) and not isinstance(spec["max_batch_size"], bool)
              and 1 <= spec["max_batch_size"] <= 1024, "max_batch_size",
              "must be an integer from 1 to 1024")
    check_key(is_number(spec["max_batch_delay_ms"]) and 0 <= spec["max_batch_delay_ms"] <= 10_000,
              "max_batch_delay_ms", "must be between 0 and 10000")
    check_key(spec["task_timeout_s"] is None or (is_number(spec["task_timeout_s"])
                                                 and spec["task_timeout_s"] > 0),
              "task_timeout_s", "must be > 0")
    return ServiceSpec(
        name=name, kind=table["kind"], settings=settings,
        restart=build_settings(RestartSettings, restart, where),
        max_memory=None if max_memory is None else parse_size(max_memory, f"{where}.max_memory"),
        **spec,
    )


@dataclass(frozen=True)
class SystemConfig:
    system: SystemSettings
    health: HealthSettings
    services: Mapping[str, ServiceSpec]
    routes: Mapping[str, str]
    context: Mapping[str, Any] = field(default_factory=dict)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def log_dir(self) -> Path:
        """Where this runtime's logs (and a daemon's pid and config files) live."""
        if self.system.log_dir:
            return Path(self.system.log_dir)
        return Path(tempfile.gettempdir()) / f"grym-{self.system.admin_port}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "SystemConfig":
        data = dict(data or {})
        known = {"system", "health", "restart", "services", "routes", "context", "logging",
                 "metrics"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown section (known: {', '.join(sorted(known))})",
                              {"key": unknown[0]})
        for section in known:
            if section in data and not isinstance(data[section], Mapping):
                raise ConfigError(f"{section}: must be a table", {"key": section})
        restart_defaults = dict(data.get("restart", {}))
        build_settings(RestartSettings, restart_defaults, "restart")  # report its errors as its own
        services = {name: _service_spec(name, table, restart_defaults)
                    for name, table in dict(data.get("services", {})).items()}
        routes = {t: s for t, s in DEFAULT_ROUTES.items()}
        for task_type, service in dict(data.get("routes", {})).items():
            check(isinstance(service, str) and service in services, f"routes.{task_type}",
                  f"names service {service!r}, which is not configured "
                  f"(configured: {', '.join(sorted(services)) or 'none'})")
            routes[task_type] = service
        return cls(
            system=build_settings(SystemSettings, data.get("system"), "system"),
            health=build_settings(HealthSettings, data.get("health"), "health"),
            services=services, routes=routes, context=_context_table(data.get("context")),
            metrics=build_settings(MetricsSettings, data.get("metrics"), "metrics"),
            logging=build_settings(LoggingSettings, data.get("logging"), "logging"),
            raw=data,
        )


def _context_table(table: Mapping[str, Any] | None) -> dict[str, Any]:
    """Checked here, so that a bad [context] key fails the start, not the context actor."""
    from context.settings import ContextSettings
    ContextSettings.from_config(table)
    return dict(table or {})


def default_config(admin_port: int | None = None) -> dict[str, Any]:
    """The embedded default: one echo service, nothing to download."""
    config: dict[str, Any] = {"services": {"echo": {"kind": "echo", "eager": True}}}
    if admin_port is not None:
        config["system"] = {"admin_port": admin_port}
    return config
