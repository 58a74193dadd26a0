"""``run.py join LEADER_HOST:PORT``: this host becomes a member of a running runtime.

A member is a Thespian actor system (multiprocTCPBase) on its own admin port
that joins the leader's convention (Thespian's ``Convention Address.IPv4``
capability) and advertises what this host offers (runtime.capabilities:
cores, memory, CUDA devices, its name). The leader's supervisor places there
the services whose ``requires`` it meets; they stay the supervisor's
children. A member runs the same checkout as the leader (actors are created
by class name), signs every frame with the runtime's key (a copy of the
leader's key file: it refuses to start without one), and, for CUDA services,
starts its actors with spawn (``system.start_method``). It runs in the
foreground until SIGTERM or SIGINT: then it leaves the convention (the
supervisor places its services again on the others) and ends its processes.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import psutil
import structlog

from messages.errors import ConfigError, InitError
from runtime import frames
from runtime.capabilities import MEMBER, START_METHOD_ENV, advertised, default_name
from runtime.logs import configure_logging
from runtime.network import restrict_bind
from supervisor.config import SystemConfig

from .launcher import SYSTEM_BASE, PortInUse, alive, end_processes, port_in_use, report
from .toml_config import read_config

DEFAULT_MEMBER_PORT = 19500
# How often the member registers with the leader again. Thespian's member re-registers on
# its own (every 7 min 22 s), but after the leader's admin was restarted (its launcher
# restarts the runtime) it did not, in 40 s of watching: its one attempt went to the admin
# that was stopping. A capability update makes the admin register at once: a restarted
# leader learns of its members within this (measured: the service back in 5.2 s).
REREGISTRATION_S = 5.0
REACH_TIMEOUT_S = 3.0
WATCH_INTERVAL_S = 0.5  # how often it looks at its admin (and the actors to end at the end)


@dataclasses.dataclass(frozen=True)
class Membership:
    """What ``join`` needs, resolved from the command line and the config file."""

    leader: str                 # the leader's admin, host:port
    name: str
    config: SystemConfig        # this member's [system] and [logging] (admin_port: its own)
    secret_file: Path


def parse_leader(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"LEADER: expected HOST:PORT of the runtime's admin, such as "
                          f"10.0.0.5:19500, got {text!r}", {"key": "leader"})
    return host, int(port)


def membership(leader: str, config_file: str | None, port: int | None,
               name: str | None) -> Membership:
    """The member's settings: ``[system]`` and ``[logging]`` of ``config_file`` (the
    leader's file will do; its services are the leader's business), ``port`` for its
    admin, and its key: ``system.secret_file``, else where the leader keeps its key
    when it runs on this host (``<tmp>/grym-<leader port>/secret.key``)."""
    leader_host, leader_port = parse_leader(leader)
    raw = read_config(config_file) if config_file else {}
    system = dict(raw.get("system") or {})
    system["admin_port"] = port or system.get("admin_port") or DEFAULT_MEMBER_PORT
    config = SystemConfig.from_dict({"system": system, "logging": raw.get("logging") or {}})
    secret = Path(config.system.secret_file) if config.system.secret_file else \
        SystemConfig.from_dict({"system": {"admin_port": leader_port}}).secret_file()
    return Membership(f"{leader_host}:{leader_port}", name or default_name(
        config.system.admin_port), config, secret)


def check(member: Membership) -> None:
    """Refuse what cannot work, before anything starts: no key, a loopback member of a
    remote leader, a taken port, a leader that does not answer."""
    sys_cfg = member.config.system
    leader_host, leader_port = parse_leader(member.leader)
    if not member.secret_file.is_file():
        raise ConfigError(
            f"system.secret_file: no key at {member.secret_file}: a member signs and checks "
            "every frame with the runtime's key; copy the leader's key file here (mode 0600) "
            "or name it with system.secret_file", {"key": "system.secret_file"})
    if ipaddress.ip_address(sys_cfg.bind_address).is_loopback and not _is_loopback(leader_host):
        raise ConfigError(
            f"system.bind_address: {sys_cfg.bind_address} is a loopback address, which the "
            f"leader at {member.leader} cannot reach; set this host's address on its network",
            {"key": "system.bind_address"})
    if port_in_use(sys_cfg.bind_address, sys_cfg.admin_port):
        raise PortInUse(f"system.admin_port: port {sys_cfg.admin_port} is in use; give the "
                        "member another one with --port", {"key": "system.admin_port"})
    try:
        socket.create_connection((leader_host, leader_port), REACH_TIMEOUT_S).close()
    except OSError as exc:
        raise InitError(f"no runtime answers at {member.leader}: {exc}") from None


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(socket.gethostbyname(host)).is_loopback
    except (OSError, ValueError):
        return False


def join(member: Membership, ready_file: str | None = None) -> int:
    """Start the member's actor system in the leader's convention, say so (``report``),
    and serve until SIGTERM or SIGINT; 1 if its admin died meanwhile."""
    from thespian.actors import ActorSystem

    check(member)
    sys_cfg = member.config.system
    log_dir = member.config.log_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    frames.use_secret_file(member.secret_file)   # never a new key: it could not talk to the leader
    frames.limit_message_bytes(sys_cfg.max_message_bytes)
    frames.count_rejections_in(log_dir / "rejected-frames")
    os.environ["THESPLOG_FILE"] = str(log_dir / "thespian.log")
    log_defs = configure_logging(str(log_dir / "grym.log"), member.config.logging.format or "json",
                                 member.config.logging.level)
    restrict_bind(sys_cfg.bind_address)
    os.environ[START_METHOD_ENV] = sys_cfg.start_method
    offered = advertised(member.name, sys_cfg.bind_address, sys_cfg.admin_port,
                         sys_cfg.start_method, leader=member.leader)
    stop = {"requested": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(requested=True))
    signal.signal(signal.SIGINT, lambda *_: stop.update(requested=True))
    asys = ActorSystem(SYSTEM_BASE, offered, logDefs=log_defs, transientUnique=True)
    admin_pid = admin_pid_on(sys_cfg.admin_port)
    report({"ready": True, "name": member.name, "leader": member.leader,
            "admin_port": sys_cfg.admin_port, "pid": os.getpid(), "log_dir": str(log_dir),
            "capabilities": _printable(offered)}, ready_file)
    code, processes = 0, []
    register_at = time.monotonic() + REREGISTRATION_S
    while not stop["requested"]:
        if admin_pid is not None and not alive(admin_pid):
            code = 1  # its actors went with it; the supervisor places its services elsewhere
            break
        processes = _processes(admin_pid) or processes
        if time.monotonic() >= register_at:
            register_at = time.monotonic() + REREGISTRATION_S
            _register_again(asys, member.name)
        time.sleep(WATCH_INTERVAL_S)
    try:
        asys.shutdown()  # leaves the convention: the supervisor hears of it at once
    finally:
        end_processes(processes, timeout_s=5.0)
    return code


def _register_again(asys: Any, name: str) -> None:
    """Make the member's admin register with the leader now (REREGISTRATION_S says why):
    Thespian's admin registers again whenever its capabilities change."""
    try:
        asys.updateCapability(MEMBER, name)  # the same value: only the registration matters
    except Exception as exc:  # noqa: BLE001 - the admin in a bad way: the watch above decides
        structlog.get_logger().warning("member_register_failed",
                                       error=f"{type(exc).__name__}: {exc}")


def admin_pid_on(port: int, besides: int | None = None) -> int | None:
    """The admin listening on ``port``. Thespian daemonizes it (a session of its own, its
    parent gone), and the processes it forks and the one that started it (``besides``)
    hold its listening socket too: it is the listener whose parent is not one."""
    listeners = {}
    for proc in psutil.process_iter(["name"]):
        if proc.pid in (besides, os.getpid()) or "python" not in (proc.info["name"] or ""):
            continue
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
                   for c in proc.net_connections(kind="tcp")):
                listeners[proc.pid] = proc.ppid()
        except psutil.Error:
            continue
    return next((pid for pid, parent in listeners.items() if parent not in listeners), None)


def _processes(admin_pid: int | None) -> list[psutil.Process]:
    """The admin and the actors it started (Thespian daemonizes the admin: not our child)."""
    try:
        admin = psutil.Process(admin_pid) if admin_pid else None
        return [admin, *admin.children(recursive=True)] if admin else []
    except psutil.Error:
        return []


def _printable(capabilities: dict[str, Any]) -> dict[str, Any]:
    return {k: v if isinstance(v, (str, int, float, bool, list)) else str(v)
            for k, v in capabilities.items()}
