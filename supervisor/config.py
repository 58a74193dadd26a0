"""The runtime's configuration: plain dicts (from TOML or code) -> validated dataclasses.

Every error is a ConfigError whose message starts with the dotted key, e.g.
``services.asr.max_memory: expected a positive size such as '2GB', got '-1GB'``.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from messages.errors import ConfigError
from messages.system import (
    REPLICA_SEPARATOR, VERSION_SEPARATOR, is_route, replica_id, route_targets, service_id,
    split_service_id,
)
from messages.validation import build_settings, check, is_int, is_number, parse_size
from runtime.capabilities import REQUIREMENTS
from services.registry import load_kind

from .autoscaling import AutoscalingConfig

RESTART_TYPES = ("permanent", "transient", "temporary")
# Not "forkserver": Thespian's multiprocTCPBase cannot start a child under it (its
# _startChildActor fails with "Bad file descriptor"), so it is refused here, not at run time.
START_METHODS = ("fork", "spawn")

# Names the runtime uses for its own actors (the supervisor's children, and the
# router's metrics label for a task no service took): a service by one of these
# names would overwrite that child, or be counted with it.
RESERVED_NAMES = frozenset({"supervisor", "router", "context", "none"})
WORKER_SHUTDOWN_S = 5.0  # OTP's default shutdown budget for a worker
_VERSION = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class SystemSettings:
    admin_port: int = 19500             # 0: a free one, picked at start (embedded default)
    # Thespian binds every socket to all interfaces unless we say otherwise;
    # anything that can reach a port can make the process unpickle data.
    bind_address: str = "127.0.0.1"
    start_method: str = "fork"
    default_task_timeout_s: float = 30.0
    start_timeout_s: float = 60.0
    log_dir: str | None = None
    # The key that signs every frame between the runtime's processes (runtime.frames);
    # default: secret.key in the state directory (see SystemConfig.secret_file).
    secret_file: str | None = None
    max_message_bytes: int = 64 << 20   # a bigger message is refused, sent or received

    def __post_init__(self) -> None:
        check(self.secret_file is None or (isinstance(self.secret_file, str)
                                           and self.secret_file != ""),
              "secret_file", "must be a file path")
        object.__setattr__(self, "max_message_bytes",
                           parse_size(self.max_message_bytes, "max_message_bytes"))
        check(self.max_message_bytes >= 1 << 20, "max_message_bytes", "must be at least 1MiB")
        check(is_int(self.admin_port)
              and (self.admin_port == 0 or 1024 <= self.admin_port <= 65535),
              "admin_port", "must be an integer from 1024 to 65535, or 0 for a free one")
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
        check(is_int(self.missed_heartbeats) and self.missed_heartbeats >= 1,
              "missed_heartbeats", "must be an integer >= 1")
        check(is_number(self.hang_grace_s) and self.hang_grace_s >= 0, "hang_grace_s",
              "must be >= 0")
        check(is_number(self.degrade_error_rate) and 0 < self.degrade_error_rate <= 1,
              "degrade_error_rate", "must be in (0, 1]")
        check(is_int(self.degrade_min_requests) and self.degrade_min_requests >= 1,
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
        check(is_int(self.max_restarts) and self.max_restarts >= 0, "max_restarts",
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
        check(self.port is None or (is_int(self.port) and 1024 <= self.port <= 65535),
              "port", "must be an integer from 1024 to 65535")
        _check_address(self.bind_address)
        check(is_number(self.scrape_timeout_s) and self.scrape_timeout_s > 0, "scrape_timeout_s",
              "must be > 0")


@dataclass(frozen=True)
class HttpSettings:
    """The HTTP API and status page the launcher serves (the daemon turns it on)."""

    enabled: bool = False
    port: int | None = None             # default: the admin port + 2
    bind_address: str = "127.0.0.1"
    max_body_bytes: int | str = 16 * 2**20  # or a size such as "32MB"; larger bodies get 413
    token_file: str | None = None       # a file holding the bearer token; required off loopback

    def __post_init__(self) -> None:
        check(isinstance(self.enabled, bool), "enabled", "must be true or false")
        check(self.port is None or (is_int(self.port) and 1024 <= self.port <= 65535),
              "port", "must be an integer from 1024 to 65535")
        _check_address(self.bind_address)
        object.__setattr__(self, "max_body_bytes",
                           parse_size(self.max_body_bytes, "max_body_bytes"))
        check(self.token_file is None or (isinstance(self.token_file, str) and self.token_file),
              "token_file", "must be the path of a file holding the token")
        # Whoever reaches the port can run tasks and change the context.
        check(self.token_file is not None or ipaddress.ip_address(self.bind_address).is_loopback,
              "token_file", f"is required when bind_address ({self.bind_address}) is not a "
              "loopback address")


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


@dataclass(frozen=True)
class ServiceSpec:
    """One ``[services.NAME]`` table.

    The runtime's keys (queue, batching, deadline, memory, restart, eager, context)
    belong to the spec alone; ``settings`` holds the kind's own model knobs. (Ray
    Serve splits a deployment's options from its ``user_config`` the same way.) A
    kind may declare defaults for the runtime's keys (``ModelService.runtime_defaults``):
    a key in the service's table wins over the kind's default, which wins over the
    default here. For the restart keys the ``[restart]`` table sits
    between the two.

    ``name`` is the service's id: its table's name, with ``@version`` when the table
    says ``version = "2"`` (or is named ``"asr@2"``), so that two versions of one
    service run side by side, each with its own processes, health and metrics.
    """

    name: str
    kind: str
    settings: Any                     # the kind's own Settings dataclass
    restart: RestartSettings = field(default_factory=RestartSettings)
    version: str | None = None
    eager: bool = False
    max_queue: int = 64
    max_batch_size: int = 1
    max_batch_delay_ms: float = 0.0
    task_timeout_s: float | None = None
    max_memory: int | str | None = None  # resident bytes, or a size such as "2GB"; above it: degraded
    fetch_context: bool = True
    warmup: bool = True               # run the kind's warm-up inputs before it is online
    # What the actor system it runs on must offer (runtime.capabilities.REQUIREMENTS), such as
    # {gpu = true}: the supervisor places it on a member of the convention that meets it.
    requires: Mapping[str, Any] = field(default_factory=dict)
    # How many processes serve it (Ray Serve's replicas); with an ``autoscaling`` table,
    # the count it starts with (default its min_replicas), which the autoscaler changes.
    replicas: int | None = None
    autoscaling: AutoscalingConfig | None = None
    # OTP's shutdown budget: after a stop's drain, this long to release the model and
    # end, then killed (a large model may need more than a worker's default).
    shutdown_s: float = WORKER_SHUTDOWN_S
    replica_of: str | None = None     # set by the runtime on replicas other than the first

    def __post_init__(self) -> None:
        object.__setattr__(self, "requires", _requirements(self.requires))
        if isinstance(self.autoscaling, Mapping):
            object.__setattr__(self, "autoscaling", build_settings(
                AutoscalingConfig, self.autoscaling, "autoscaling"))
        check(self.autoscaling is None or isinstance(self.autoscaling, AutoscalingConfig),
              "autoscaling", "must be a table such as {min_replicas = 1, max_replicas = 4}")
        if self.replicas is None:
            replicas = self.autoscaling.min_replicas if self.autoscaling else 1
            object.__setattr__(self, "replicas", replicas)
        check(is_number(self.shutdown_s) and 0 < self.shutdown_s <= 3600, "shutdown_s",
              "must be between 0 and 3600 seconds")
        check(is_int(self.replicas) and 1 <= self.replicas <= 64, "replicas",
              "must be an integer from 1 to 64")
        check(self.autoscaling is None or
              self.autoscaling.min_replicas <= self.replicas <= self.autoscaling.max_replicas,
              "replicas", "must be within autoscaling.min_replicas .. max_replicas")
        check(self.version is None or (isinstance(self.version, str)
                                       and bool(_VERSION.match(self.version))),
              "version", f"must be a string of letters, digits, '.', '_' or '-' such as "
              f"\"2\", got {self.version!r}")
        check(isinstance(self.eager, bool), "eager", "must be true or false")
        check(isinstance(self.warmup, bool), "warmup", "must be true or false")
        check(isinstance(self.fetch_context, bool), "fetch_context", "must be true or false")
        check(is_int(self.max_queue) and self.max_queue >= 1, "max_queue",
              "must be an integer >= 1")
        check(is_int(self.max_batch_size) and 1 <= self.max_batch_size <= 1024, "max_batch_size",
              "must be an integer from 1 to 1024")
        check(is_number(self.max_batch_delay_ms) and 0 <= self.max_batch_delay_ms <= 10_000,
              "max_batch_delay_ms", "must be between 0 and 10000")
        check(self.task_timeout_s is None or (is_number(self.task_timeout_s)
                                              and self.task_timeout_s > 0),
              "task_timeout_s", "must be > 0")
        if self.max_memory is not None:
            object.__setattr__(self, "max_memory", parse_size(self.max_memory, "max_memory"))


    @property
    def serves(self) -> str:
        """The service id it serves: its own, or for a replica the one it is a replica of."""
        return self.replica_of or self.name

    def replica_specs(self) -> list["ServiceSpec"]:
        """One spec per replica: this one (replica 0), then ``id#1`` .. ``id#N-1``."""
        return [self, *(dataclasses.replace(self, name=replica_id(self.name, i),
                                            replica_of=self.name)
                        for i in range(1, self.replicas))]

    def placement(self) -> dict[str, Any]:
        """Where it may run: its ``requires``, and what its kind's settings need (a CUDA
        device needs a GPU and spawn); empty: anywhere, which is the leader."""
        return {**load_kind(self.kind).requirements(self.settings), **self.requires}


def _requirements(table: Any) -> dict[str, Any]:
    """A ``requires`` table, checked: known keys, each with a value of its kind."""
    check(isinstance(table, Mapping), "requires", "must be a table such as {gpu = true}")
    out: dict[str, Any] = {}
    for key, value in table.items():
        rule = REQUIREMENTS.get(key)
        check(rule is not None, f"requires.{key}",
              f"unknown requirement (known: {', '.join(sorted(REQUIREMENTS))})")
        if rule.compare == "flag":
            ok = isinstance(value, bool)
        elif key == "memory":
            value = parse_size(value, f"requires.{key}")
            ok = True
        elif rule.compare == "at_least":
            ok = is_int(value) and value >= 1
        else:
            ok = isinstance(value, str) and value != "" and \
                (key != "start_method" or value in START_METHODS)
        check(ok, f"requires.{key}", f"must be {rule.what}, got {value!r:.80}")
        out[key] = value
    return out


_RESTART_KEYS = frozenset(f.name for f in dataclasses.fields(RestartSettings))
# The keys of a [services.NAME] table that the runtime reads; every other key but
# ``kind`` and ``version`` goes to the kind's Settings.
RUNTIME_KEYS = frozenset(f.name for f in dataclasses.fields(ServiceSpec)
                         if f.name not in ("name", "kind", "settings", "restart",
                                           "version", "replica_of")) | _RESTART_KEYS
_OWN_KEYS = frozenset({"kind", "version"})


def _service_spec(key: str, table: Mapping[str, Any],
                  restart_section: Mapping[str, Any]) -> ServiceSpec:
    where = f"services.{key}"
    name, key_version = split_service_id(key)
    check(bool(name), where, f"a service name must not start with {VERSION_SEPARATOR!r}")
    check(REPLICA_SEPARATOR not in key, where,
          f"a service name must not contain {REPLICA_SEPARATOR!r} (it names replicas)")
    check(name not in RESERVED_NAMES, where,
          f"the name {name!r} is the runtime's own (reserved: "
          f"{', '.join(sorted(RESERVED_NAMES))}); give the service another name")
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table", {"key": where})
    version = table.get("version", key_version)
    check(key_version is None or version == key_version, f"{where}.version",
          f"is {version!r}, but the table's name says {key_version!r}")
    check(isinstance(table.get("kind"), str), f"{where}.kind",
          "is required (a service kind such as 'echo')")
    try:
        kind_cls = load_kind(table["kind"])
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc.message}", {"key": f"{where}.kind"}) from None
    kind_defaults = _runtime_defaults(kind_cls, f"{where}.kind")
    settings = build_settings(kind_cls.Settings, {k: v for k, v in table.items()
                                                  if k not in _OWN_KEYS and k not in RUNTIME_KEYS},
                              where)
    # The service's own key, else the kind's default, else the spec's; the
    # [restart] table comes between the service's and the kind's.
    own = {k: v for k, v in table.items() if k in RUNTIME_KEYS}
    restart_keys = lambda keys: {k: v for k, v in keys.items() if k in _RESTART_KEYS}  # noqa: E731
    restart = {**restart_keys(kind_defaults), **restart_section, **restart_keys(own)}
    runtime = {k: v for k, v in {**kind_defaults, **own}.items() if k not in _RESTART_KEYS}
    spec = build_settings(ServiceSpec, {
        "name": key, "kind": table["kind"], "settings": settings, "version": version,
        "restart": build_settings(RestartSettings, restart, where), **runtime}, where)
    return dataclasses.replace(spec, name=table_service_id(key, table))


def table_service_id(key: str, table: Mapping[str, Any]) -> str:
    """The service id a ``[services.KEY]`` table runs as: the key's name, with the
    version the key (``"asr@2"``) or the table (``version = "2"``) gives."""
    name, key_version = split_service_id(key)
    return service_id(name, table.get("version", key_version))


def _runtime_defaults(kind_cls: type, where: str) -> Mapping[str, Any]:
    """The kind's defaults for the runtime's keys; a kind that declares a runtime
    key as a model setting too is refused, so that no key has two owners."""
    kind = getattr(kind_cls, "kind", "") or kind_cls.__name__
    doubled = sorted(RUNTIME_KEYS & {f.name for f in dataclasses.fields(kind_cls.Settings)})
    check(not doubled, where, f"kind {kind!r} declares the runtime's key(s) {', '.join(doubled)} "
          "in its Settings; declare their defaults in runtime_defaults instead")
    defaults = dict(kind_cls.runtime_defaults)
    unknown = sorted(set(defaults) - RUNTIME_KEYS)
    check(not unknown, where, f"kind {kind!r} has runtime_defaults for unknown key(s) "
          f"{', '.join(unknown)} (runtime keys: {', '.join(sorted(RUNTIME_KEYS))})")
    return defaults


def _routes(services: Mapping[str, ServiceSpec], explicit: Mapping[str, Any]) -> dict[str, Any]:
    """Each task type a configured service's kind serves goes to that service;
    ``[routes]`` adds types and chooses when several services serve one type, by
    naming one service id or splitting by weight (``{"asr@1" = 90, "asr@2" = 10}``)."""
    for task_type, route in explicit.items():
        check(is_route(route), f"routes.{task_type}",
              f"must name a service, or split by weight such as {{\"asr@1\" = 90, \"asr@2\" = "
              f"10}} (whole numbers >= 0, not all 0), got {route!r:.80}")
        for service in route_targets(route):
            check(service in services, f"routes.{task_type}",
                  f"names service {service!r}, which is not configured "
                  f"(configured: {', '.join(sorted(services)) or 'none'})")
    explicit = {t: r if isinstance(r, str) else dict(r) for t, r in explicit.items()}
    claims: dict[str, list[str]] = {}
    for spec in services.values():
        for task_type in sorted(load_kind(spec.kind).task_types):
            claims.setdefault(task_type, []).append(spec.name)
    for task_type, names in claims.items():
        check(len(names) == 1 or task_type in explicit, f"routes.{task_type}",
              f"services {', '.join(repr(n) for n in names[:-1])} and {names[-1]!r} "
              f"{'both' if len(names) == 2 else 'all'} serve task type {task_type!r}; "
              f'choose one in [routes], e.g. {task_type} = "{names[0]}"')
    return {**{t: names[0] for t, names in claims.items()}, **explicit}


@dataclass(frozen=True)
class SystemConfig:
    system: SystemSettings
    health: HealthSettings
    services: Mapping[str, ServiceSpec]   # by service id (name, or name@version), and replica
    routes: Mapping[str, Any]             # task type -> service id, or {service id: weight}
    context: Mapping[str, Any] = field(default_factory=dict)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def log_dir(self) -> Path:
        """Where this runtime's logs (and a daemon's pid and config files) live: the
        config's ``system.log_dir``, else the directory systemd made for the unit
        (``LogsDirectory=``, passed as ``$LOGS_DIRECTORY``), else one under the temp dir."""
        if self.system.log_dir:
            return Path(self.system.log_dir)
        systemd_dirs = os.environ.get("LOGS_DIRECTORY")  # ":"-separated when it names several
        if systemd_dirs:
            return Path(systemd_dirs.split(":")[0])
        return Path(tempfile.gettempdir()) / f"grym-{self.system.admin_port}"

    def secret_file(self) -> Path:
        """The runtime's key: ``system.secret_file``, else ``secret.key`` in the
        directory systemd keeps for the unit (``StateDirectory=``), else in the log directory."""
        if self.system.secret_file:
            return Path(self.system.secret_file)
        state_dirs = os.environ.get("STATE_DIRECTORY")
        return Path(state_dirs.split(":")[0] if state_dirs else self.log_dir()) / "secret.key"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> "SystemConfig":
        data = dict(data or {})
        known = {"system", "health", "restart", "services", "routes", "context", "logging",
                 "metrics", "http"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown section (known: {', '.join(sorted(known))})",
                              {"key": unknown[0]})
        for section in known:
            if section in data and not isinstance(data[section], Mapping):
                raise ConfigError(f"{section}: must be a table", {"key": section})
        restart_section = dict(data.get("restart", {}))
        build_settings(RestartSettings, restart_section, "restart")  # report its errors as its own
        services: dict[str, ServiceSpec] = {}
        for key, table in dict(data.get("services", {})).items():
            spec = _service_spec(key, table, restart_section)
            check(spec.name not in services, f"services.{key}",
                  f"runs as {spec.name!r}, as another table does; give each version its own")
            services[spec.name] = spec
        routes = _routes(services, dict(data.get("routes", {})))
        services = {replica.name: replica for spec in services.values()
                    for replica in spec.replica_specs()}
        system = build_settings(SystemSettings, data.get("system"), "system")
        for spec in services.values():
            _check_start_method(spec, system)
        return cls(
            system=system,
            health=build_settings(HealthSettings, data.get("health"), "health"),
            services=services, routes=routes, context=_context_table(data.get("context")),
            metrics=build_settings(MetricsSettings, data.get("metrics"), "metrics"),
            http=build_settings(HttpSettings, data.get("http"), "http"),
            logging=build_settings(LoggingSettings, data.get("logging"), "logging"),
            raw=data,
        )


def _check_start_method(spec: ServiceSpec, system: SystemSettings) -> None:
    """A CUDA service on this host needs spawn: refused under fork, unless its ``requires``
    places it on a member (whose own start method placement then checks)."""
    needs = load_kind(spec.kind).requirements(spec.settings).get("start_method")
    if needs and needs != system.start_method and not spec.requires:
        name, _ = split_service_id(spec.name)
        device = getattr(spec.settings, "device", None)
        raise ConfigError(
            f"services.{name}.device: {device!r} needs the {needs} start method (CUDA cannot "
            f"start in a process made by {system.start_method}): set system.start_method = "
            f"\"{needs}\", or place the service on a member that runs {needs} with requires = "
            "{gpu = true}", {"key": f"services.{name}.device"})


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
