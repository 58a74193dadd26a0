"""The daemon's command line: ``python run.py COMMAND``.

    start [--config F]        start the runtime in the background; returns once it is ready
    serve [--config F]        the same in the foreground (systemd, containers); SIGTERM stops it
    stop [--drain S]          graceful stop: drain tasks, release models, end every process
    apply F [--dry-run]       change the running runtime to the config in F (SIGHUP to the
                              daemon does the same with its own file); prints the plan
    status [--json]           services, their state, figures and last error; the context store
    restart NAME              start a failed (or stopped) service again, with a fresh restart window
    submit TYPE [...]         run one task and print its result
    context store|get|query|delete|stats ...
    logs [--tail N] [--follow]  where the logs are (their last lines; new ones as they come)
    check-config F            validate a config file without starting anything
    join LEADER_HOST:PORT [--port P] [--name N]
                              make this host a member of the runtime at LEADER (its
                              services with ``requires`` may run here); foreground

Every command finds the runtime by ``--port``, else by the admin port in
``--config``, else on 19500. Exit status: 0 done; 1 the runtime could not do
it (not running, already running, a process left behind); 2 a bad command line
or config (the message names the option, or the key and line); 3 the submitted
task failed (its error is printed with the result).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from messages import Task
from messages.context import ContextFilter, ContextItem
from messages.errors import ConfigError, GrymError, InvalidInput

from supervisor.config import SystemConfig, default_config
from .launcher import (
    launcher_argv, port_in_use, project_env, runtime_processes, start_launcher, write_run_config,
)
from .system import ServiceSystem
from .http.checks import check_http_table, http_port
from .toml_config import load_config, read_config

DEFAULT_PORT = 19500


# -- finding the configuration and the runtime -----------------------------------------
def daemon_config(args: argparse.Namespace) -> tuple[dict[str, Any], SystemConfig]:
    """The raw and validated config: the file (or the embedded default), with the
    --port override, and the daemon's defaults (``with_daemon_defaults``)."""
    if args.config:
        load_config(args.config)  # errors with file and line
        raw = read_config(args.config)
    else:
        raw = default_config()
    raw.setdefault("system", {})
    if args.port:
        raw["system"]["admin_port"] = args.port
    raw["system"].setdefault("admin_port", DEFAULT_PORT)
    config = SystemConfig.from_dict(with_daemon_defaults(raw))
    if config.system.admin_port == 0:
        raise ConfigError("system.admin_port: the daemon needs a fixed port, so that clients "
                          f"find it (default {DEFAULT_PORT})", {"key": "system.admin_port"})
    return raw, config


def daemon_raw(path: str | Path, admin_port: int) -> dict[str, Any]:
    """The config file as the daemon running on ``admin_port`` reads it (SIGHUP, apply)."""
    return daemon_config(argparse.Namespace(config=str(path), port=admin_port))[0]


def with_daemon_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    """The daemon serves metrics and the HTTP API unless the file says otherwise."""
    for section in ("metrics", "http"):
        if isinstance(raw.setdefault(section, {}), dict):
            raw[section].setdefault("enabled", True)
    return raw


def http_url(config: SystemConfig) -> str | None:
    """The daemon's HTTP API and status page, when it serves one."""
    if not config.http.enabled:
        return None
    host = config.http.bind_address
    return f"http://{f'[{host}]' if ':' in host else host}:{http_port(config)}/"


def admin_port(args: argparse.Namespace) -> int:
    if args.port:
        return args.port
    if args.config:
        return load_config(args.config).system.admin_port
    return DEFAULT_PORT


def connect(args: argparse.Namespace) -> ServiceSystem:
    """Join the daemon with the key and message limit of the configuration it runs."""
    config = daemon_config(args)[1]
    return ServiceSystem.connect(config.system.admin_port, secret_file=config.secret_file(),
                                 max_message_bytes=config.system.max_message_bytes)


# -- commands ---------------------------------------------------------------------------
def cmd_start(args: argparse.Namespace) -> int:
    raw, config = daemon_config(args)
    port = config.system.admin_port
    if port_in_use(config.system.bind_address, port):
        print(f"a runtime is already running on port {port} (stop it with: run.py stop "
              f"--port {port})", file=sys.stderr)
        return 1
    run_dir = config.log_dir()
    launcher, status = start_launcher(raw, run_dir, cwd=run_cwd(args), detach=True,
                                      timeout_s=config.system.start_timeout_s + 10,
                                      source=Path(args.config) if args.config else None)
    if not status.get("ready"):
        error = status.get("error", {})
        print(f"could not start: {error.get('code')}: {error.get('message')}", file=sys.stderr)
        return 2
    (run_dir / "grym.pid").write_text(str(launcher.pid))
    metrics = (f"; metrics http://{config.metrics.bind_address}:{status['metrics_port']}/metrics"
               if status.get("metrics_port") else "")
    http = f"; HTTP API and status page {http_url(config)}" if status.get("http_port") else ""
    print(f"started: admin port {port}, pid {launcher.pid}{metrics}{http}; logs in {run_dir}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    raw, config = daemon_config(args)
    port = config.system.admin_port
    if port_in_use(config.system.bind_address, port):
        print(f"a runtime is already running on port {port}", file=sys.stderr)
        return 1
    config_file = write_run_config(raw, config.log_dir())
    # Become the launcher (same pid, so systemd's main process and SIGTERM
    # target stay this one): a fresh interpreter that has not imported what
    # this command did, and whose environment names the runtime, so that every
    # process forked from it can be found by `stop`.
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(run_cwd(args))
    source = ["--source", str(Path(args.config).resolve())] if args.config else []
    os.execve(sys.executable,
              launcher_argv(config_file, "--foreground", "--log-format", "console", *source),
              project_env(runtime_id=str(config_file)))
    return 0  # not reached


def run_cwd(args: argparse.Namespace) -> Path:
    """The runtime's working directory: the config file's, so that every relative
    path in the file (a model folder too) means the same from wherever `start` ran."""
    return Path(args.config).resolve().parent if args.config else Path.cwd()


def cmd_stop(args: argparse.Namespace) -> int:
    port = admin_port(args)
    if not port_in_use("127.0.0.1", port):
        print(f"no runtime is running on port {port}")
        return 0
    system = connect(args)
    run_dir = Path(system.refresh().log_dir) if system.info.log_dir else None
    marker = str(run_dir / "config.json") if run_dir else None
    system.shutdown(drain_s=args.drain)
    deadline = time.monotonic() + args.drain + 20
    while marker and runtime_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = runtime_processes(marker) if marker else []
    if left:
        print(f"stopped, but {len(left)} processes are still alive: {[p.pid for p in left]}",
              file=sys.stderr)
        return 1
    print(f"stopped the runtime on port {port}")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    args.config = args.file  # the runtime is found by the file's admin port (or --port)
    raw = daemon_config(args)[0]
    with connect(args) as system:
        report = system.apply(raw, dry_run=args.dry_run, drain_s=args.drain)
    if not report.steps:
        print(f"{args.file}: nothing to change")
        return 0
    print(f"plan for {args.file}{' (dry run: nothing changed)' if args.dry_run else ''}:")
    for step in report.steps:
        print(f"  {step.line()}")
    if report.applied:
        print(f"applied {len(report.steps)} step(s)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    with connect(args) as system:
        supervisor_pid, last_apply = system.info.pid, system.info.last_apply
        members = system.info.members
        infos = {s.name: s for s in system.services()}
        metrics = {m.name: m for m in system.metrics()}
        try:
            stats = system.context.stats()
        except GrymError:
            stats = None
    rows = []
    for name, info in infos.items():
        m = metrics.get(name)
        rows.append({"service": name, "replica_of": info.replica_of, "kind": info.kind,
                     "state": info.status.value, "member": info.member, "restarts": info.restarts, "pid": info.pid,
                     "queue": m.queue_depth if m else None, "requests": m.requests if m else None,
                     "errors": m.errors if m else None,
                     "p50_ms": round(m.latency_p50_ms, 2) if m else None,
                     "p99_ms": round(m.latency_p99_ms, 2) if m else None,
                     "rss_mb": round(m.rss_bytes / 1e6, 1) if m else None,
                     "last_error": info.last_error})
    member_rows = [{"member": m.name, "address": m.address,
                    "role": "leader" if m.local else "member", "up": m.up,
                    "cores": m.capabilities.get("cores"),
                    "memory_gb": round(m.capabilities.get("memory", 0) / 1e9, 1),
                    "gpu": m.capabilities.get("gpu"),
                    "cuda_devices": m.capabilities.get("cuda_devices"),
                    "services": ", ".join(m.services)} for m in members]
    context = None if stats is None else {"items": stats.items, "bytes": stats.bytes,
                                          "evictions": stats.evictions,
                                          "expirations": stats.expirations}
    http = serving_http_url(args)
    if args.json:
        print(json.dumps({"services": rows, "members": member_rows, "context": context,
                          "supervisor_pid": supervisor_pid, "http": http,
                          "last_apply": last_apply}, indent=2))
        return 0
    columns = ("service", "kind", "state", "member", "restarts", "queue", "requests",
               "errors", "p50_ms", "p99_ms", "rss_mb", "last_error")
    if any(row["replica_of"] for row in rows):  # a service with replicas: say whose they are
        columns = ("service", "replica_of", *columns[1:])
    _table(rows, columns)
    if len(member_rows) > 1:  # the leader alone: nothing to say
        print()
        _table(member_rows, ("member", "address", "role", "up", "cores", "memory_gb", "gpu",
                             "cuda_devices", "services"))
    if context:
        print(f"\ncontext store: {context['items']} items, {context['bytes'] / 1e6:.2f} MB, "
              f"{context['evictions']} evicted, {context['expirations']} expired")
    if http:
        print(f"HTTP API and status page: {http} (API docs: {http}docs)")
    if last_apply:
        print(f"last apply: {last_apply}")
    return 0


def _table(rows: list[dict[str, Any]], header: tuple[str, ...]) -> None:
    cells = [{h: _cell(r[h]) for h in header} for r in rows]
    widths = [max(len(h), *(len(c[h]) for c in cells)) for h in header]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip())
    for c in cells:
        print("  ".join(c[h].ljust(w) for h, w in zip(header, widths)).rstrip())


def cmd_join(args: argparse.Namespace) -> int:
    from .member import join, membership
    return join(membership(args.leader, args.config, args.port, args.name), args.ready_file)


def _cell(value: Any, width: int = 60) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def cmd_restart(args: argparse.Namespace) -> int:
    """OTP's restart_child: a failed (or stopped) service comes back, its restart window afresh."""
    with connect(args) as system:
        before = {s.name: s for s in system.services()}.get(args.name)
        info = system.restart_service(args.name, timeout=args.timeout)
    had = f"; it had {before.status.value}: {before.last_error}" if before else ""
    print(f"restarted {info.name}: {info.status.value}, pid {info.pid}{had}")
    return 0


def serving_http_url(args: argparse.Namespace) -> str | None:
    """The HTTP address the daemon's configuration names, if something answers there."""
    try:
        _, config = daemon_config(args)
    except GrymError:
        return None
    url = http_url(config)
    if url is None:
        return None
    host = config.http.bind_address
    return url if port_in_use("127.0.0.1" if host in ("0.0.0.0", "::") else host,
                              http_port(config)) else None


def cmd_submit(args: argparse.Namespace) -> int:
    if args.downmix and not args.file:
        raise InvalidInput("--downmix applies to --file; with --data, put \"downmix\": true in "
                           "the JSON", {"option": "--downmix"})
    if args.file:
        data: Any = read_file_arg(args.file, "--file")
        if args.downmix:  # the audio kinds' dict form; the file's bytes travel as they are
            data = {"audio": data, "downmix": True}
    elif args.data is not None:
        data = json_arg(args.data, "--data")
    else:
        data = None
    task = Task(id=args.id or f"cli-{uuid.uuid4().hex[:12]}", type=args.type, data=data,
                timeout_s=args.timeout, store_results=args.store)
    with connect(args) as system:
        result = (system.get_service(args.service).execute_task(task) if args.service
                  else system.router.route_task(task))
    print(json.dumps({"task_id": result.task_id, "status": result.status.value,
                      "error": None if result.error is None else
                      {"code": result.error.code.value, "message": result.error.message},
                      "data": printable(result.data),
                      "metrics_ms": {k: round(v, 3) for k, v in vars(result.metrics).items()}},
                     indent=2))
    return 0 if result.ok else 3


def cmd_context(args: argparse.Namespace) -> int:
    if args.action in ("get", "delete") and not args.id:
        raise InvalidInput(f"context {args.action}: give the item id", {"option": "id"})
    tags = frozenset(filter(None, args.tags.split(",")))
    priority = int(args.priority) if args.priority and args.priority.isdigit() else args.priority
    with connect(args) as system:
        ctx = system.context
        if args.action == "store":
            reply = ctx.store(ContextItem(
                type=args.type, content=json_arg(args.content, "--content"),
                source=args.source or "cli", priority=priority or "normal", tags=tags,
                task_id=args.task_id, workflow_id=args.workflow_id, ttl_s=args.ttl))
        elif args.action == "get":
            reply = ctx.retrieve(args.id).to_dict()
        elif args.action == "delete":
            reply = ctx.delete(args.id)
        elif args.action == "stats":
            reply = ctx.stats()
        else:
            items = ctx.query(ContextFilter(
                types=frozenset(args.type.split(",")) if args.type else None,
                sources=frozenset(args.source.split(",")) if args.source else None,
                tags=tags or None, min_priority=priority, task_id=args.task_id,
                workflow_id=args.workflow_id, limit=args.limit))
            reply = {"total": items.total, "items": [i.to_dict() for i in items.items]}
    print(json.dumps(printable(reply), indent=2, default=str))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    config = SystemConfig.from_dict({"system": {"admin_port": admin_port(args)}}) \
        if not args.config else load_config(args.config)
    log_dir = config.log_dir()
    print(f"logs: {log_dir}/grym.log (JSON lines), {log_dir}/thespian.log, "
          f"{log_dir}/launcher.out")
    log_file = log_dir / "grym.log"
    if not log_file.exists():
        print(f"(no {log_file} yet: a runtime under `serve` logs to its own stderr)")
    if args.tail and log_file.exists():
        print("".join(log_file.read_text(errors="replace").splitlines(True)[-args.tail:]), end="")
    if args.follow:
        try:
            follow(log_file)
        except KeyboardInterrupt:
            pass
    return 0


def follow(path: Path, poll_s: float = 0.2) -> None:
    """Print the lines written to ``path`` from now on, until interrupted. Like
    ``tail -F`` it follows the name: when logrotate has moved the file away (the
    runtime's WatchedFileHandler then starts a new one), the rest of the old file
    is printed, then the new one from its start; a file truncated in place is
    read again from its start."""
    stream = open(path, "rb") if path.exists() else None
    if stream is not None:
        stream.seek(0, os.SEEK_END)
    pending = b""  # a line that is still being written
    while True:
        chunk = stream.readline() if stream is not None else b""
        if chunk:
            pending += chunk
            if pending.endswith(b"\n"):
                sys.stdout.write(pending.decode("utf-8", "replace"))
                sys.stdout.flush()
                pending = b""
            continue
        time.sleep(poll_s)
        try:
            current = path.stat()
        except FileNotFoundError:
            continue  # moved away; the new one is not there yet
        if stream is None or current.st_ino != os.fstat(stream.fileno()).st_ino:
            if stream is not None:
                rest = pending + stream.read()
                if rest:
                    sys.stdout.write(rest.decode("utf-8", "replace").rstrip("\n") + "\n")
                    sys.stdout.flush()
                stream.close()
            stream, pending = open(path, "rb"), b""
        elif current.st_size < stream.tell():
            stream.seek(0)
            pending = b""


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    daemon = SystemConfig.from_dict(with_daemon_defaults(read_config(args.file)))
    check_http_table(daemon)
    http = f"; HTTP {http_url(daemon)}" if daemon.http.enabled else "; HTTP off"
    services = [sid + (f" ({spec.replicas} replicas)" if spec.replicas > 1 else "")
                for sid, spec in config.services.items() if spec.replica_of is None]
    print(f"{args.file}: valid; services: {', '.join(services) or 'none'}; "
          f"admin port {config.system.admin_port}{http}")
    return 0


def json_arg(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{option}: not valid JSON ({exc}); quote strings, e.g. "
                           f"--data '\"text\"'", {"option": option}) from None


def read_file_arg(path: str, option: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidInput(f"{option}: cannot read {path}: {exc.strerror}",
                           {"option": option}) from None


def printable(value: Any) -> Any:
    """JSON-friendly: arrays become a short description, dataclasses dicts."""
    if isinstance(value, np.ndarray):
        head = value.ravel()[:4].tolist()
        return {"array": list(value.shape), "dtype": str(value.dtype), "first": head}
    if isinstance(value, dict):
        return {str(k): printable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": len(value)}
    if hasattr(value, "__dataclass_fields__"):
        return printable({k: getattr(value, k) for k in value.__dataclass_fields__})
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return value


# -- parsing ------------------------------------------------------------------------------
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="run.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.split("\n\n")[1:]))
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="a TOML config file")
    common.add_argument("--port", type=int, help="the runtime's admin port")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("start", parents=[common], help="start in the background")
    sub.add_parser("serve", parents=[common], help="run in the foreground")
    stop = sub.add_parser("stop", parents=[common], help="graceful stop")
    stop.add_argument("--drain", type=float, default=10.0, help="seconds to finish tasks")
    apply = sub.add_parser("apply", parents=[common],
                           help="change the running runtime to a config file")
    apply.add_argument("file", help="the new config (TOML)")
    apply.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    apply.add_argument("--drain", type=float, default=10.0,
                       help="seconds replaced and removed services may finish their tasks")
    status = sub.add_parser("status", parents=[common], help="services and figures")
    restart = sub.add_parser("restart", parents=[common],
                             help="start a failed (or stopped) service again")
    restart.add_argument("name", help="the service")
    restart.add_argument("--timeout", type=float, default=60.0,
                         help="seconds to wait for it to be online")
    status.add_argument("--json", action="store_true")
    submit = sub.add_parser("submit", parents=[common], help="run one task")
    submit.add_argument("type", help="task type, e.g. speech-to-text or echo")
    submit.add_argument("--data", help="task data as JSON")
    submit.add_argument("--file", help="task data from a file, as bytes (e.g. audio: WAV, FLAC, "
                                       "OGG/Vorbis or MP3, decoded by the service)")
    submit.add_argument("--downmix", action="store_true",
                        help="with --file: send {\"audio\": BYTES, \"downmix\": true}, so that "
                             "a stereo file is averaged to mono")
    submit.add_argument("--service", help="run on this service, not through the route table")
    submit.add_argument("--id", help="task id (default: a new one)")
    submit.add_argument("--timeout", type=float, default=None)
    submit.add_argument("--store", action="store_true", help="store the result as task_history")
    context = sub.add_parser("context", parents=[common], help="the context store")
    context.add_argument("action", choices=("store", "get", "query", "delete", "stats"))
    context.add_argument("id", nargs="?", help="item id (get, delete)")
    context.add_argument("--type", help="item type (store); types, comma separated (query)")
    context.add_argument("--content", default="{}", help="JSON content (store)")
    context.add_argument("--source", default=None,
                         help="who wrote it (store, default cli); sources, comma separated (query)")
    context.add_argument("--priority", default=None,
                         help="1-10 or low|normal|high|critical (store, default normal); "
                              "the least priority (query)")
    context.add_argument("--tags", default="", help="comma separated (query: any of them)")
    context.add_argument("--task-id", default=None)
    context.add_argument("--workflow-id", default=None)
    context.add_argument("--ttl", type=float, default=None, help="seconds (store)")
    context.add_argument("--limit", type=int, default=20)
    logs = sub.add_parser("logs", parents=[common], help="where the logs are")
    logs.add_argument("--tail", type=int, default=0, help="print the last N lines")
    logs.add_argument("--follow", "-f", action="store_true",
                      help="keep printing new lines (follows a rotated file), until Ctrl-C")
    check = sub.add_parser("check-config", help="validate a config file")
    check.add_argument("file")
    join = sub.add_parser("join", parents=[common],
                          help="make this host a member of a runtime (foreground); --port: "
                               "this member's admin port, --config: its [system] table")
    join.add_argument("leader", help="LEADER_HOST:PORT, the runtime's admin")
    join.add_argument("--name", help="this member's name (default: HOST:PORT)")
    join.add_argument("--ready-file", help="write the ready line here, not to stdout")
    return p


COMMANDS = {"start": cmd_start, "serve": cmd_serve, "stop": cmd_stop, "apply": cmd_apply,
            "restart": cmd_restart,
            "status": cmd_status, "submit": cmd_submit, "context": cmd_context, "logs": cmd_logs,
            "check-config": cmd_check_config, "join": cmd_join}


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except GrymError as exc:
        print(f"{exc.code.value}: {exc.message}", file=sys.stderr)
        # 2: fix the command or the config; 1: the runtime could not do it (not running...).
        return 2 if isinstance(exc, (ConfigError, InvalidInput)) else 1
