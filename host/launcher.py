"""Start an actor system from a clean process, and stay as its watcher.

The host never forks the actor system itself: a host that has already run
torch (or any multi-threaded library) would hand its forked children a broken
thread pool (see the shared notes: the forked model actor deadlocks). So
``ServiceSystem.start`` and ``run.py start/serve`` run this module in a fresh
interpreter. It starts Thespian's admin, creates the supervisor, prints one
JSON line (ready, or why not), then waits: for SIGTERM/SIGINT (graceful
stop), for the admin to end after a stop was asked for (the supervisor says
so: SystemStopping), or (embedded mode) for its host to die. Thespian
daemonizes its admin (setsid and a double fork), so the actor processes are
not our children: they are found by an environment variable they inherit
(``RUNTIME_ID``). If the supervisor's process or the admin's dies otherwise,
the launcher restarts the runtime, embedded or daemon (at most
SUPERVISOR_MAX_RESTARTS a minute, then it stops and exits 1). Whenever it
exits, every process of its runtime has ended; if it is killed, the supervisor
ends the runtime itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping

import psutil
import structlog
from thespian.actors import ActorSystemException

from runtime import frames
from runtime.capabilities import START_METHOD_ENV, advertised, default_name
from runtime.logs import configure_logging
from runtime.network import restrict_bind
from runtime.processes import RUNTIME_ID, runtime_processes  # noqa: F401 - re-exported
from supervisor.config import RestartSettings, SystemConfig
from supervisor.restart_policy import RestartPolicy
from messages.errors import ConfigError, ErrorCode, GrymError, InitError
from messages.system import (
    SUPERVISOR_CLASS, SUPERVISOR_GLOBAL_NAME, ConfigApplied, ErrorReply, ShutdownSystem,
    StartSystem, SystemInfo, SystemStopping,
)

from .watchdog import SupervisorWatchdog, notify

SYSTEM_BASE = "multiprocTCPBase"
SUPERVISOR_MAX_RESTARTS = 5         # within SUPERVISOR_RESTART_PERIOD_S, else give up
SUPERVISOR_RESTART_PERIOD_S = 60.0
METRICS_PORT_OFFSET = 1             # the metrics endpoint's default port: the admin port + 1
HTTP_PORT_OFFSET = 2                # the HTTP API's default port: the admin port + 2
# What a free admin port must have free above it.
DERIVED_PORT_OFFSETS = (METRICS_PORT_OFFSET, HTTP_PORT_OFFSET)
PORT_ATTEMPTS = 5                   # picks of a free admin port, when others take the first
WATCH_INTERVAL_S = 0.1              # how often the launcher looks at the supervisor and the admin
STOP_GRACE_S = 5.0                  # a stop asked for, the supervisor gone, the admin still up


class PortInUse(ConfigError):
    """A port of the configuration is taken (by another runtime, or by anything else)."""


def port_in_use(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((address, port)) == 0


def capabilities(config: SystemConfig) -> dict[str, Any]:
    return {"Admin Port": config.system.admin_port,
            "Process Startup Method": config.system.start_method}


def leader_capabilities(config: SystemConfig) -> dict[str, Any]:
    """The runtime's own admin: the leader of its Thespian convention (members started by
    ``run.py join`` register with it), advertising what this host offers
    (runtime.capabilities) for the placement of services with requirements."""
    sys_cfg = config.system
    own = f"{sys_cfg.bind_address}:{sys_cfg.admin_port}"
    return advertised(default_name(sys_cfg.admin_port), sys_cfg.bind_address,
                      sys_cfg.admin_port, sys_cfg.start_method, leader=own)


def start_runtime(config: SystemConfig, log_format: str = "json", log_to_file: bool = True):
    """Check the metrics port and start the actor system: on the configured admin
    port, or (``admin_port = 0``) on a free one, picked again when another
    process takes it before Thespian has bound it. Returns (the configuration
    with the port it runs on, actor system, SystemInfo)."""
    def start(chosen: SystemConfig):
        from .http.checks import check_http
        check_metrics_port(chosen)
        check_http(chosen)
        return (chosen, *start_actor_system(chosen, log_format, log_to_file))

    if config.system.admin_port:
        return start(config)
    for _ in range(PORT_ATTEMPTS - 1):
        try:
            return start(with_admin_port(config, free_admin_port(config.system.bind_address)))
        except (PortInUse, ActorSystemException):
            # Taken since we looked (ActorSystemException: by something that is
            # not a Thespian admin, so Thespian could not start one there).
            continue
    return start(with_admin_port(config, free_admin_port(config.system.bind_address)))


def free_admin_port(address: str) -> int:
    """A port the kernel reports free (a bind to port 0), with its derived ports free too."""
    for _ in range(20):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((address, 0))
            port = sock.getsockname()[1]
        if port + max(DERIVED_PORT_OFFSETS) <= 65535 and \
                not any(port_in_use(address, port + offset) for offset in DERIVED_PORT_OFFSETS):
            return port
    raise PortInUse("system.admin_port: found no free port with the ports above it free",
                    {"key": "system.admin_port"})


def with_admin_port(config: SystemConfig, port: int) -> SystemConfig:
    """``config`` with the admin port it runs on (also in ``raw``, which the supervisor reads)."""
    system = {**config.raw.get("system", {}), "admin_port": port}
    return dataclasses.replace(config, system=dataclasses.replace(config.system, admin_port=port),
                               raw={**config.raw, "system": system})


def start_actor_system(config: SystemConfig, log_format: str = "json", log_to_file: bool = True):
    """Start the admin and the supervisor; returns (actor system, SystemInfo).

    Logs are JSON lines in the log directory, or (``log_to_file=False``, the
    foreground ``serve``) lines on stderr in ``log_format``; the actor
    processes write through the same handler, in Thespian's logger process."""
    from thespian.actors import ActorSystem

    sys_cfg = config.system
    if port_in_use(sys_cfg.bind_address, sys_cfg.admin_port):
        raise PortInUse(f"system.admin_port: port {sys_cfg.admin_port} is already in use "
                        "(is the runtime already running there?)", {"key": "system.admin_port"})
    log_dir = config.log_dir()
    log_dir.mkdir(parents=True, exist_ok=True)
    # Every frame between the runtime's processes is signed with this key: an embedded
    # runtime's host hands its key over (in the environment), a daemon keeps its file
    # across restarts. Each process counts the frames it refuses in the log directory.
    if frames.has_key():
        frames.write_secret_file(config.secret_file())
    frames.use_secret_file(config.secret_file(), create=True)
    frames.limit_message_bytes(sys_cfg.max_message_bytes)
    frames.count_rejections_in(log_dir / "rejected-frames")
    # Thespian's own log goes next to ours, not to /tmp/thespian.log.
    os.environ["THESPLOG_FILE"] = str(log_dir / "thespian.log")
    os.environ.setdefault("THESPLOG_FILE_MAXSIZE", str(10 << 20))
    log_defs = configure_logging(str(log_dir / "grym.log") if log_to_file else None,
                                 config.logging.format or log_format, config.logging.level)
    restrict_bind(sys_cfg.bind_address)
    os.environ[START_METHOD_ENV] = sys_cfg.start_method  # every actor knows how it was started
    offered = leader_capabilities(config)
    asys = ActorSystem(SYSTEM_BASE, offered, logDefs=log_defs, transientUnique=True)
    if not _admin_is_ours(sys_cfg.admin_port):
        # Another runtime's admin bound the port between our check and our
        # admin's start, and Thespian joined it: leave it alone (no shutdown).
        raise PortInUse(f"system.admin_port: port {sys_cfg.admin_port} was taken by another "
                        "runtime while this one started", {"key": "system.admin_port"})
    try:
        supervisor = asys.createActor(SUPERVISOR_CLASS, globalName=SUPERVISOR_GLOBAL_NAME)
        reply = asys.ask(supervisor, StartSystem(config.raw, launcher_pid=os.getpid(),
                                                 capabilities=offered),
                         sys_cfg.start_timeout_s)
    except BaseException:
        asys.shutdown()
        raise
    if isinstance(reply, SystemInfo):
        return asys, reply
    asys.shutdown()
    if isinstance(reply, ErrorReply):
        raise reply.error.to_exception()
    raise InitError(f"the supervisor did not report ready within {sys_cfg.start_timeout_s:g} s "
                    f"(got {type(reply).__name__}); see {log_dir}")


def stop_actor_system(asys: Any, supervisor: Any, drain_s: float) -> None:
    """Graceful: drain tasks, release models, then end every actor process."""
    try:
        asys.ask(supervisor, ShutdownSystem(drain_s=drain_s), drain_s + 10)
    finally:
        asys.shutdown()


def listening_pid(port: int) -> int | None:
    """The process listening on ``port`` (Thespian's admin daemonizes: it is not our child)."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


def _admin_is_ours(port: int) -> bool:
    """Whether the admin listening on ``port`` belongs to this launcher's runtime
    (True when that cannot be told: no marker, or no right to read the process)."""
    marker, pid = os.environ.get(RUNTIME_ID), listening_pid(port)
    if marker is None or pid is None:
        return True
    try:
        return psutil.Process(pid).environ().get(RUNTIME_ID) == marker
    except psutil.Error:
        return True


def alive(pid: int | None) -> bool:
    try:
        return pid is not None and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def project_env(runtime_id: str | None = None) -> dict[str, str]:
    """The environment for a launcher: it imports this checkout even when not installed,
    and (``runtime_id``) carries the name that ``runtime_processes`` finds its processes by."""
    root = str(Path(__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": root if not existing else f"{root}{os.pathsep}{existing}"}
    if runtime_id:
        env[RUNTIME_ID] = runtime_id
    return env


def launcher_argv(config_file: Path, *options: str) -> list[str]:
    """The command line of a launcher for the configuration in ``config_file``."""
    return [sys.executable, "-m", "host.launcher", "--config-json", str(config_file), *options]


def write_run_config(raw: Mapping[str, Any], run_dir: Path) -> Path:
    """The configuration as a launcher reads it; its path also names the runtime's processes."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = run_dir / "config.json"
    config_file.write_text(json.dumps(raw))
    return config_file


def start_launcher(raw: Mapping[str, Any], run_dir: Path, *, cwd: Path, timeout_s: float,
                   parent_pid: int | None = None, log_format: str = "json",
                   detach: bool = False,
                   source: Path | None = None) -> tuple[subprocess.Popen, dict[str, Any]]:
    """Start a launcher for the configuration ``raw`` and wait for its ready line.

    Its files go to ``run_dir``: ``config.json``, ``ready.json`` and its own
    output, ``launcher.out``. ``parent_pid``: it takes the runtime down when
    that process dies (an embedding host). ``detach``: it runs in a session of
    its own, to outlive whoever started it (the daemon). ``source``: the daemon's
    config file, which SIGHUP applies again. Returns the process and
    the ready line, which carries ``admin_port``; a launcher that did not get
    ready has been stopped.
    """
    config_file = write_run_config(raw, run_dir)
    ready_file, output = run_dir / "ready.json", run_dir / "launcher.out"
    ready_file.unlink(missing_ok=True)
    options = ["--ready-file", str(ready_file), "--log-format", log_format]
    if parent_pid is not None:
        options += ["--parent-pid", str(parent_pid)]
    if source is not None:
        options += ["--source", str(Path(source).resolve())]
    with open(output, "ab") as out:
        launcher = subprocess.Popen(
            launcher_argv(config_file, *options), stdin=subprocess.DEVNULL, stdout=out,
            stderr=out, cwd=cwd, env=project_env(runtime_id=str(config_file)),
            start_new_session=detach)
    status = wait_ready(launcher, ready_file, time.monotonic() + timeout_s, output)
    if not status.get("ready"):
        stop_launcher(launcher)
    return launcher, status


def stop_launcher(launcher: subprocess.Popen) -> None:
    """SIGTERM (a graceful stop of its runtime), then SIGKILL if it does not end."""
    if launcher.poll() is None:
        launcher.terminate()
        try:
            launcher.wait(15)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait(5)


def wait_ready(launcher: Any, ready_file: Path, deadline: float, output: Path) -> dict[str, Any]:
    """The launcher's ready line, or why there is none (it exited early, or took too long)."""
    while time.monotonic() < deadline:
        if ready_file.exists():
            return json.loads(ready_file.read_text())
        if launcher.poll() is not None:
            tail = output.read_text(errors="replace")[-2000:] if output.exists() else ""
            return {"ready": False, "error": {"code": "INIT_ERROR",
                                              "message": f"the launcher exited early: {tail}"}}
        time.sleep(0.01)
    return {"ready": False, "error": {"code": "TIMEOUT",
                                      "message": "the runtime did not start in time"}}


def report(status: dict[str, Any], ready_file: str | None) -> None:
    """The one line that says ready (or why not): to a file for a host, else to stdout.

    A file, not a pipe: every actor process forked from here inherits our
    file descriptors, and a pipe that the host stops reading would block them.
    """
    line = json.dumps(status)
    if ready_file is None:
        print(line, flush=True)
        return
    tmp = f"{ready_file}.tmp"
    Path(tmp).write_text(line + "\n")
    os.replace(tmp, ready_file)


def serve(config: SystemConfig, parent_pid: int | None = None, log_format: str = "json",
          ready_file: str | None = None, foreground: bool = False,
          source: str | None = None) -> int:
    """Run until told to stop; report readiness through ``report``. ``source``: the
    daemon's config file, applied again on SIGHUP (host/reload.py)."""
    stop = {"requested": False}

    def request_stop(signum, _frame):
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    from .reload import Reloader
    reloader = Reloader(source, config)  # SIGHUP: apply the config file again
    signal.signal(signal.SIGHUP, reloader.on_sighup)
    try:
        warm_imports(config)
        config, asys, info = start_runtime(config, log_format, log_to_file=not foreground)
    except Exception as exc:  # noqa: BLE001 - reported to whoever started us
        report(failure(exc), ready_file)
        return 2
    try:
        metrics = start_metrics(config, asys, info)
        http = start_http(config, asys, info)
        if metrics and http:  # the HTTP API's handle: its calls and retries on /metrics
            metrics[1].client = lambda: http.state.system.client_metrics()
    except Exception as exc:  # noqa: BLE001 - e.g. the port was taken since the check
        stop_actor_system(asys, info.supervisor, drain_s=1.0)
        end_leftovers(timeout_s=5.0)
        report(failure(exc if isinstance(exc, ConfigError) else ConfigError(
            f"metrics.port: cannot serve metrics: {exc}", {"key": "metrics.port"})), ready_file)
        return 2
    report({"ready": True, "pid": os.getpid(), "admin_port": config.system.admin_port,
            "metrics_port": metrics[0] if metrics else None,
            "http_port": http.port if http else None, "log_dir": str(config.log_dir())},
           ready_file)
    services = len(config.services)
    notify(f"READY=1\nSTATUS=serving {services} service{'s' * (services != 1)}")
    watchdog = SupervisorWatchdog.start_if_asked(asys, info)  # WatchdogSec= in the unit
    log = structlog.get_logger()
    reloader.config = config  # with the admin port it runs on
    # A supervisor that keeps dying (a bad model, a full disk) must not be
    # restarted forever: past the limit we stop and exit non-zero, so the
    # process manager above us (systemd Restart=on-failure) sees it.
    restarts = RestartPolicy(RestartSettings(max_restarts=SUPERVISOR_MAX_RESTARTS,
                                             restart_period_s=SUPERVISOR_RESTART_PERIOD_S))
    code = 0
    admin_pid = info.admin_pid or listening_pid(config.system.admin_port)
    stopping_since = None  # the runtime said a stop was asked for (SystemStopping)
    while not stop["requested"]:
        if parent_pid is not None and os.getppid() != parent_pid:
            break  # the embedding host died: take the system down with it
        admin_up = _runtime_up(admin_pid, config)
        if stopping_since is not None:
            # Stopped by request (run.py stop): done once the admin has ended; a
            # supervisor gone while the admin stays is stopped from here.
            if not admin_up or (not _supervisor_alive(info)
                                and time.monotonic() - stopping_since > STOP_GRACE_S):
                break
        elif not admin_up or not _supervisor_alive(info):
            if _heard_stopping(asys, 0.05, reloader):  # its word was still on the way: not a crash
                stopping_since = time.monotonic()
                continue
            # The supervisor or Thespian's admin died. Nothing in Thespian restarts a
            # top-level actor: we do, by starting the runtime again (persisted context
            # is reloaded by the new one; host handles re-join it).
            decision = restarts.on_exit(time.monotonic(), abnormal=True)
            if not decision.restart:
                log.error("supervisor_keeps_dying", reason=decision.reason)
                code = 1
                break
            notify("STATUS=restarting the runtime: the supervisor or the admin died")
            if watchdog:
                watchdog.restarting()
            time.sleep(decision.delay_s)
            try:
                config = reloader.config  # the last one applied to the runtime
                asys, info = restart_runtime(asys, config, log_format, foreground, admin_up)
            except Exception as exc:  # noqa: BLE001 - give up cleanly, and say why
                log.error("runtime_restart_failed", error=f"{type(exc).__name__}: {exc}")
                code = 1
                break
            admin_pid = info.admin_pid or listening_pid(config.system.admin_port)
            if metrics:
                metrics[1].retarget(asys, info.supervisor)
            if http:
                http.retarget(asys, info)
            if watchdog:
                watchdog.retarget(asys, info)
            notify(f"STATUS=serving {len(config.services)} services (runtime restarted)")
            continue
        reloader.poll(asys, info.supervisor)
        if _heard_stopping(asys, WATCH_INTERVAL_S, reloader) and stopping_since is None:
            stopping_since = time.monotonic()
    if watchdog:
        watchdog.stop()
    notify("STOPPING=1\nSTATUS=stopping: draining tasks")
    if http:
        http.drain()  # new requests get SHUTTING_DOWN and event streams end; accepted ones go on
    supervisor_alive = _supervisor_alive(info)
    if _runtime_up(admin_pid, config):
        try:
            if supervisor_alive:
                stop_actor_system(asys, info.supervisor, drain_s=10.0)
            else:
                asys.shutdown()  # nobody left to drain: do not wait for an answer
        except Exception as exc:  # noqa: BLE001 - still make sure nothing is left below
            log.warning("graceful_stop_failed", error=f"{type(exc).__name__}: {exc}")
    if http:
        http.stop()  # the drain above answered the requests in flight
    # A dead supervisor's children are nobody's: the admin will not end them.
    end_leftovers(timeout_s=10.0 if supervisor_alive else 1.0)
    return code


def warm_imports(config: SystemConfig) -> None:
    """Import the supervisor's module and its children's actor modules here, by name,
    once: the admin is forked from this process and the supervisor from the admin, so
    each (re)started runtime finds them loaded (about 0.6 s sooner up on a 2-core
    machine). Only imported, never run here (shared notes: fork after torch); model
    libraries are left to the supervisor, which imports them before forking services."""
    importlib.import_module(SUPERVISOR_CLASS.rpartition(".")[0])
    children = importlib.import_module("supervisor.children")
    specs = [*children.core_children(),
             *(children.service_child(spec) for spec in config.services.values())]
    for module in {spec.actor_class.rpartition(".")[0] for spec in specs}:
        importlib.import_module(module)


def _heard_stopping(asys: Any, wait_s: float, reloader: Any) -> bool:
    """Wait up to ``wait_s`` for the supervisor's word that a stop was asked for
    (and take its word that a config was applied: the reloader keeps it)."""
    try:
        msg = asys.listen(wait_s)
        if isinstance(msg, ConfigApplied):
            reloader.applied(msg.config)
        return isinstance(msg, SystemStopping)
    except Exception:  # noqa: BLE001 - a transport in a bad way: the checks above decide
        time.sleep(wait_s)
        return False


def _supervisor_alive(info: SystemInfo) -> bool:
    return info.pid is None or alive(info.pid)  # no pid reported: assume alive


def _runtime_up(admin_pid: int | None, config: SystemConfig) -> bool:
    if admin_pid is not None:
        return alive(admin_pid)
    # The admin's pid could not be read (net_connections needs privileges on some systems).
    return port_in_use(config.system.bind_address, config.system.admin_port)


def end_processes(processes: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait up to ``timeout_s`` for ``processes`` to end (a zombie has), then kill the
    ones that did not; returns those."""
    deadline = time.monotonic() + timeout_s
    left = [p for p in processes if alive(p.pid)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [p for p in left if alive(p.pid)]
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass
    return left


def end_leftovers(timeout_s: float) -> None:
    """Wait for every process of this runtime to end, then kill what did not.

    So that "the launcher is gone" means "the runtime is gone": ``run.py
    stop`` waits for exactly that, and systemd kills whatever is left in the
    unit the moment its main process exits.
    """
    # multiprocessing's resource tracker (spawn start method) ends with us: not a leftover.
    left = end_processes([p for p in forks_of_this_process()
                          if "resource_tracker" not in " ".join(p.cmdline())], timeout_s)
    if left:
        structlog.get_logger().warning("killed_leftover_processes", pids=[p.pid for p in left])


def restart_runtime(asys: Any, config: SystemConfig, log_format: str, foreground: bool,
                    admin_up: bool = True):
    structlog.get_logger().error("supervisor_died_restarting_runtime" if admin_up
                                 else "admin_died_restarting_runtime")
    try:
        if admin_up:  # a dead admin cannot be asked (and the ask would wait)
            asys.shutdown()
    except Exception:  # noqa: BLE001 - the admin may be in a bad way too
        pass
    for proc in forks_of_this_process():  # orphans of the dead supervisor
        proc.kill()
    deadline = time.monotonic() + 15
    while port_in_use(config.system.bind_address, config.system.admin_port) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    return start_actor_system(config, log_format, log_to_file=not foreground)


def forks_of_this_process() -> list[psutil.Process]:
    """The admin and every actor started from this launcher."""
    marker = os.environ.get(RUNTIME_ID)
    if marker:
        return runtime_processes(marker)
    me = psutil.Process()  # started by hand: its forks share its command line
    return [p for p in psutil.process_iter(["cmdline"])
            if p.pid != me.pid and p.info.get("cmdline") == me.cmdline()]


def metrics_port(config: SystemConfig) -> int:
    return config.metrics.port or config.system.admin_port + METRICS_PORT_OFFSET


def check_metrics_port(config: SystemConfig) -> None:
    settings, port = config.metrics, metrics_port(config)
    if settings.enabled and port == config.system.admin_port:
        raise ConfigError(f"metrics.port: {port} is the admin port; choose another",
                          {"key": "metrics.port"})
    if settings.enabled and port_in_use(settings.bind_address, port):
        raise PortInUse(f"metrics.port: port {port} is already in use (set [metrics] port, "
                        "or enabled = false)", {"key": "metrics.port"})


def forget_sockets_on(port: int) -> None:
    """In a process forked from the launcher (a restarted runtime's admin, and every
    actor forked from it): let go of the sockets on a port the launcher serves (HTTP,
    metrics): its listening socket and connections.
    Otherwise a connection the launcher closes stays open (no FIN while a copy of the
    descriptor lives), and the port outlives the launcher's server. /dev/null takes
    over their descriptor numbers, so a stale object that still holds one cannot
    close a descriptor opened later."""
    if not os.path.isdir("/proc/self/fd"):
        return
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            try:
                sock = socket.socket(fileno=fd)  # OSError: not a socket
            except OSError:
                continue
            try:
                local = sock.getsockname()
            except OSError:
                local = None
            finally:
                sock.detach()
            if isinstance(local, tuple) and len(local) >= 2 and local[1] == port:
                os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def release_in_children(port: int) -> None:
    """Every process forked from this one from now on lets go of ``port``'s sockets."""
    os.register_at_fork(after_in_child=functools.partial(forget_sockets_on, port))


def start_metrics(config: SystemConfig, asys: Any, info: SystemInfo):
    """(port, collector) of the Prometheus endpoint, or None when it is off."""
    settings = config.metrics
    if not settings.enabled:
        return None
    from .observability import serve_metrics
    port = metrics_port(config)
    collector = serve_metrics(asys, info.supervisor, settings.bind_address, port,
                              settings.scrape_timeout_s)
    release_in_children(port)  # a runtime restarted later must not hold the port
    return port, collector


def start_http(config: SystemConfig, asys: Any, info: SystemInfo):
    """The HTTP API's server (host/http), or None when it is off."""
    if not config.http.enabled:
        return None
    from .http.server import HttpServer  # the web stack loads only where it is served
    return HttpServer(config, asys, info).start()


def failure(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, GrymError):
        return {"ready": False, "error": {"code": exc.code.value, "message": exc.message}}
    return {"ready": False, "error": {"code": ErrorCode.INIT_ERROR.value,
                                      "message": f"{type(exc).__name__}: {exc}"}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-json", required=True, help="file with the configuration as JSON")
    parser.add_argument("--ready-file", default=None, help="write the ready line here")
    parser.add_argument("--parent-pid", type=int, default=None, help="stop when this process dies")
    parser.add_argument("--log-format", choices=("json", "console"), default="json")
    parser.add_argument("--foreground", action="store_true", help="log to stderr, not a file")
    parser.add_argument("--source", default=None,
                        help="the daemon's config file (TOML), applied again on SIGHUP")
    args = parser.parse_args(argv)
    try:
        config = SystemConfig.from_dict(json.loads(Path(args.config_json).read_text()))
    except (GrymError, ValueError, OSError) as exc:
        report(failure(exc if isinstance(exc, GrymError) else ConfigError(str(exc))),
               args.ready_file)
        return 2
    return serve(config, args.parent_pid, args.log_format, args.ready_file, args.foreground,
                 args.source)


if __name__ == "__main__":
    sys.exit(main())
