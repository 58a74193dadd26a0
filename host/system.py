"""The host API: embed the runtime in a Python process, or join a running one.

    with ServiceSystem.start(config) as system:
        service = system.get_service("echo")
        result = service.execute_task(Task(id="t1", type="echo", data=b"hi"))

Every call is bounded by a timeout and ends in a result or a typed exception
(messages.errors). Task calls always return a TaskResult: a failed one carries
its ErrorInfo (``result.unwrap()`` raises it). Calls are safe from many
threads: each thread talks through its own private Thespian endpoint, since
threads sharing one receive each other's replies.
"""
from __future__ import annotations

import os
import queue
import subprocess
import tempfile
import threading
import time
import weakref
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, Mapping

from thespian.actors import ActorSystem, PoisonMessage

from messages.context import (
    ContextAck, ContextChange, ContextFilter, ContextItem, ContextItemReply, ContextItems,
    ContextStats, ContextSubscribed, DeleteContext, GetContextForModel, GetContextStats,
    ModelContext, QueryContext, RetrieveContext, StoreContext, SubscribeContext,
    UnsubscribeContext, UpdateContext,
)
from messages.errors import (
    ConfigError, ErrorInfo, ExecutionError, GrymError, InvalidInput, ServiceUnavailable,
    TaskTimeout,
)
from messages.service import ServiceStatus
from messages.system import (
    ErrorReply, ExecuteTask, GetHealth, GetService, GetServiceMetrics, GetSystemInfo,
    HealthEvent, HealthReport, ListServices, MetricsReport, ServiceInfo, ShutdownSystem, Subscribed, SubscribeHealth,
    SUPERVISOR_CLASS, SUPERVISOR_GLOBAL_NAME, SystemInfo, UnsubscribeHealth,
)
from messages.task import Task, TaskResult

from supervisor.config import SystemConfig, default_config
from .launcher import (
    SYSTEM_BASE, capabilities, port_in_use, runtime_processes, start_launcher, stop_launcher,
    with_admin_port,
)
from runtime.logs import host_logger
from runtime import frames
from runtime.network import restrict_bind

log = host_logger()
DEFAULT_CALL_TIMEOUT_S = 10.0
REPLY_MARGIN_S = 2.0  # past a task's own deadline, the router answers; this covers the hops


class ServiceSystem:
    """A handle on a running actor system. Use ``start`` or ``connect``."""

    secret_file: Path | None = None     # the runtime's key, for another process to join with

    def __init__(self, asys: ActorSystem, info: SystemInfo, config: SystemConfig,
                 launcher: subprocess.Popen | None, workdir: tempfile.TemporaryDirectory | None,
                 owned: bool = True):
        self._asys = asys
        self._owned = owned
        self._info = info
        self._admin_port = config.system.admin_port
        self._launcher = launcher
        self._workdir = workdir
        self._local = threading.local()
        self._endpoints: weakref.WeakSet[_Endpoint] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False
        self.router = RouterHandle(self)
        self.context = ContextHandle(self)
        self.health = HealthMonitor(self)

    # -- starting and joining -----------------------------------------------------
    @classmethod
    def start(cls, config: Mapping[str, Any] | None = None, *, timeout: float | None = None,
              log_format: str = "json") -> "ServiceSystem":
        """Start a new runtime (in clean child processes) and return a handle on it.

        Without ``system.admin_port`` it runs on a free port (``admin_port`` says
        which), so that runtimes embedded in several processes do not collide."""
        raw = dict(config if config is not None else default_config())
        if isinstance(raw.get("system", {}), Mapping):  # anything else: from_dict says why
            raw["system"] = {"admin_port": 0, **raw.get("system", {})}  # 0: the launcher picks
        parsed = SystemConfig.from_dict(raw)  # fail here, with the key, before starting anything
        sys_cfg = parsed.system
        if sys_cfg.admin_port and port_in_use(sys_cfg.bind_address, sys_cfg.admin_port):
            raise ConfigError(f"system.admin_port: port {sys_cfg.admin_port} is already in use",
                              {"key": "system.admin_port"})
        workdir = tempfile.TemporaryDirectory(prefix="grym-launch-")
        # The key that signs every frame (runtime.frames): this host's, written to the
        # configured file or to the private launch folder, where the launcher reads it.
        secret = frames.write_secret_file(sys_cfg.secret_file
                                          or Path(workdir.name, "secret.key"))
        frames.use_secret_file(secret)
        frames.limit_message_bytes(sys_cfg.max_message_bytes)
        raw["system"] = {**raw["system"], "secret_file": str(secret)}
        launcher, status = start_launcher(
            raw, Path(workdir.name), cwd=Path.cwd(), parent_pid=os.getpid(),
            log_format=log_format, timeout_s=timeout or sys_cfg.start_timeout_s + 10)
        if not status.get("ready"):
            workdir.cleanup()
            error = status.get("error", {})
            raise ErrorInfo(error.get("code", "INIT_ERROR"), error.get("message", "")).to_exception()
        try:
            system = cls._join(with_admin_port(parsed, status["admin_port"]), launcher, workdir)
            system._marker = str(Path(workdir.name, "config.json"))
            system.secret_file = secret
            return system
        except BaseException:
            stop_launcher(launcher)
            workdir.cleanup()
            raise

    @classmethod
    def connect(cls, admin_port: int, *, address: str = "127.0.0.1",
                timeout: float = DEFAULT_CALL_TIMEOUT_S, secret_file: str | Path | None = None,
                max_message_bytes: int | None = None) -> "ServiceSystem":
        """Join a runtime that is already running (a daemon, or another host's).

        ``secret_file``: the runtime's key (default: where a daemon on this port
        keeps it, ``<tmp>/grym-<port>/secret.key``; a handle's ``secret_file`` for
        one that another host started)."""
        if not port_in_use(address, admin_port):
            raise ServiceUnavailable(f"nothing is listening on {address}:{admin_port}; "
                                     "start the runtime first (run.py start)",
                                     {"admin_port": admin_port})
        system = {"admin_port": admin_port, "bind_address": address}
        if secret_file:
            system["secret_file"] = str(secret_file)
        if max_message_bytes:
            system["max_message_bytes"] = max_message_bytes
        config = SystemConfig.from_dict({"system": system})
        secret = frames.use_secret_file(config.secret_file())
        frames.limit_message_bytes(config.system.max_message_bytes)
        joined = cls._join(config, None, None, timeout=timeout, owned=False)
        joined.secret_file = secret
        return joined

    @classmethod
    def _join(cls, config: SystemConfig, launcher, workdir, timeout: float = DEFAULT_CALL_TIMEOUT_S,
              owned: bool = True) -> "ServiceSystem":
        restrict_bind(config.system.bind_address)
        asys = ActorSystem(SYSTEM_BASE, capabilities(config), transientUnique=True)
        supervisor = asys.createActor(SUPERVISOR_CLASS, globalName=SUPERVISOR_GLOBAL_NAME)
        info = asys.ask(supervisor, GetSystemInfo(), timeout)
        if not isinstance(info, SystemInfo):
            raise ServiceUnavailable(f"the supervisor did not answer within {timeout:g} s")
        return cls(asys, info, config, launcher, workdir, owned)

    # -- calls --------------------------------------------------------------------
    def _endpoint(self) -> Any:
        endpoint = getattr(self._local, "endpoint", None)
        if endpoint is None:
            if self._closed:
                raise ServiceUnavailable("this ServiceSystem handle is closed")
            endpoint = _Endpoint(self._asys)
            with self._lock:
                self._endpoints.add(endpoint)
            self._local.endpoint = endpoint
        return endpoint.handle

    def ask(self, address: Any, msg: Any, timeout: float,
            expect: Callable[[Any], bool] | None = None) -> Any:
        """Send ``msg`` and wait for its answer; typed errors for every failure.

        ``expect`` tells this call's answer from a late answer to an earlier
        call that timed out on the same endpoint; anything else is dropped.
        """
        if address is None:
            raise ServiceUnavailable(f"no actor to send {type(msg).__name__} to (it is restarting)")
        endpoint = self._endpoint()
        deadline = time.monotonic() + timeout
        try:
            reply = endpoint.ask(address, msg, timeout)
            while reply is not None and expect is not None and not _is_error(reply) \
                    and not expect(reply):
                log.debug("stale_reply_dropped", reply=type(reply).__name__)
                reply = endpoint.listen(max(0.0, deadline - time.monotonic()))
        except GrymError:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. data that cannot be pickled
            raise InvalidInput(f"could not send {type(msg).__name__}: {type(exc).__name__}: {exc}") \
                from None
        if reply is None:
            raise TaskTimeout(f"no answer to {type(msg).__name__} within {timeout:g} s",
                              {"timeout_s": timeout})
        if isinstance(reply, ErrorReply):
            raise reply.error.to_exception()
        if isinstance(reply, PoisonMessage):
            raise ExecutionError(f"{type(msg).__name__} could not be handled: {reply.details}")
        return reply

    def run_task(self, msg: Task | ExecuteTask, timeout: float | None) -> TaskResult:
        """Send a task to the router; wait for the deadline the router gives it (the
        system's deadline rule, from SystemInfo) plus the hops, unless ``timeout`` says."""
        task, service = (msg, None) if isinstance(msg, Task) else (msg.task, msg.service)
        wait = timeout or self._info.timeout_for(task, service) + REPLY_MARGIN_S
        try:
            reply = self.ask(self._info.router, msg, wait,
                             expect=lambda r: isinstance(r, TaskResult) and r.task_id == task.id)
        except TaskTimeout as exc:
            self._refresh_quietly()  # the router may have been restarted elsewhere
            return TaskResult.failure(task.id, exc.info())
        except GrymError as exc:
            return TaskResult.failure(task.id, exc.info())
        if not isinstance(reply, TaskResult):
            return TaskResult.failure(task.id, ExecutionError(
                f"unexpected answer {type(reply).__name__}").info())
        return reply

    def processes(self) -> list:
        """Every live process of a runtime this handle started (launcher, admin, actors)."""
        marker = getattr(self, "_marker", None)
        return runtime_processes(marker) if marker else []

    @property
    def info(self) -> SystemInfo:
        return self._info

    @property
    def admin_port(self) -> int:
        """The port of the runtime's admin: what ``connect`` and external actors join."""
        return self._admin_port

    @property
    def launcher_pid(self) -> int | None:
        """The launcher of a runtime this handle started (None for one joined with ``connect``)."""
        return self._launcher.pid if self._launcher is not None else None

    def open_endpoint(self) -> AbstractContextManager[ActorSystem]:
        """A private Thespian endpoint on the runtime's actor system, for a thread
        that talks to actors itself (a benchmark, or your own actors):

            with system.open_endpoint() as asys:
                mine = asys.createActor(MyActor)
                reply = asys.ask(system.info.router, Task(...), 10)

        Use it from the thread that opened it; it closes when the block ends."""
        return self._asys.private()

    def refresh(self, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> SystemInfo:
        """Fetch where the router and context actors are now (they move when restarted)."""
        self._info = self.ask(self._info.supervisor, GetSystemInfo(), timeout)
        return self._info

    def _refresh_quietly(self) -> None:
        try:
            self.refresh(timeout=2.0)
        except GrymError:
            pass

    def get_service(self, name: str, timeout: float = 60.0) -> "ServiceHandle":
        """The service by name, initialized (a lazy service loads now)."""
        info = self.ask(self._info.supervisor, GetService(name), timeout)
        return ServiceHandle(self, info)

    def services(self, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> list[ServiceInfo]:
        return list(self.ask(self._info.supervisor, ListServices(), timeout).services)

    def metrics(self, name: str | None = None, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> list:
        report: MetricsReport = self.ask(self._info.supervisor, GetServiceMetrics(name), timeout)
        return list(report.services)

    # -- ending ----------------------------------------------------------------------
    def shutdown(self, drain_s: float = 10.0) -> None:
        """Stop the runtime: drain accepted tasks, release models, end every process.

        This stops a runtime joined with ``connect`` too (that is what ``run.py
        stop`` does); use ``close`` to leave one running."""
        if self._closed:
            return
        self.health.stop()
        try:
            try:
                self.ask(self._info.supervisor, ShutdownSystem(drain_s=drain_s), drain_s + 10)
            except GrymError as exc:
                log.warning("graceful_shutdown_failed", error=str(exc))
            self._asys.shutdown()
        finally:
            self._close_endpoints()
            if self._launcher is not None:
                stop_launcher(self._launcher)
            if self._workdir is not None:
                self._workdir.cleanup()

    def close(self) -> None:
        """Shut down a runtime this handle started; leave one joined with ``connect`` running."""
        if self._owned:
            self.shutdown()
        else:
            self.health.stop()
            self._close_endpoints()

    def _close_endpoints(self) -> None:
        self._closed = True
        with self._lock:
            endpoints, self._endpoints = list(self._endpoints), weakref.WeakSet()
        for endpoint in endpoints:
            endpoint.close()

    def __enter__(self) -> "ServiceSystem":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Endpoint:
    """One thread's private Thespian endpoint.

    It lives in the thread's ``threading.local``; when the thread ends, Python
    drops it and its socket is closed here, so a host that runs many short
    threads does not leave a connection open per thread in every actor.
    """

    def __init__(self, asys: ActorSystem):
        self._manager = asys.private()
        self.handle = self._manager.__enter__()
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                self._manager.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass

    def __del__(self) -> None:
        self.close()


class ServiceHandle:
    """One named service: the seed's ModelService interface, from the host."""

    def __init__(self, system: ServiceSystem, info: ServiceInfo):
        self._system = system
        self.name = info.name
        self.kind = info.kind

    def execute_task(self, task: Task, timeout: float | None = None) -> TaskResult:
        return self._system.run_task(ExecuteTask(task, self.name), timeout)

    def get_status(self, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> ServiceStatus:
        return self.info(timeout).status

    def info(self, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> ServiceInfo:
        return self._system.ask(self._system.info.supervisor, GetService(self.name, initialize=False),
                                timeout)

    def is_initialized(self, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> bool:
        return self.get_status(timeout) in (ServiceStatus.ONLINE, ServiceStatus.DEGRADED)

    def initialize(self, timeout: float = 60.0) -> ServiceInfo:
        return self._system.ask(self._system.info.supervisor, GetService(self.name), timeout)

    def get_metrics(self, timeout: float = DEFAULT_CALL_TIMEOUT_S):
        return self._system.metrics(self.name, timeout)[0]


class RouterHandle:
    def __init__(self, system: ServiceSystem):
        self._system = system

    def route_task(self, task: Task, timeout: float | None = None) -> TaskResult:
        return self._system.run_task(task, timeout)


class ContextHandle:
    """The context repository, through the ContextActor that owns it."""

    def __init__(self, system: ServiceSystem):
        self._system = system

    def _ask(self, msg: Any, timeout: float) -> Any:
        address = self._system.info.context
        try:
            return self._system.ask(address, msg, timeout)
        except TaskTimeout:
            # A restarted context actor has a new address. A request sent to the
            # dead one was never handled, so it is safe to send it once more.
            if self._system.refresh(timeout).context == address:
                raise
            return self._system.ask(self._system.info.context, msg, timeout)

    def get_context_for_model(self, model_type: str, task_id: str | None = None,
                              priority: int | str | None = None,
                              filter: ContextFilter | None = None,
                              timeout: float = DEFAULT_CALL_TIMEOUT_S) -> dict[str, Any]:
        reply: ModelContext = self._ask(GetContextForModel(model_type, task_id, priority, filter),
                                        timeout)
        return dict(reply.data)

    def store(self, item: ContextItem, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> ContextAck:
        return self._ask(StoreContext(item), timeout)

    def retrieve(self, item_id: str, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> ContextItem:
        reply: ContextItemReply = self._ask(RetrieveContext(item_id), timeout)
        return reply.item

    def query(self, filter: ContextFilter | None = None,
              timeout: float = DEFAULT_CALL_TIMEOUT_S) -> ContextItems:
        return self._ask(QueryContext(filter or ContextFilter()), timeout)

    def update(self, item_id: str, changes: Mapping[str, Any], expected_version: int | None = None,
               timeout: float = DEFAULT_CALL_TIMEOUT_S) -> ContextAck:
        return self._ask(UpdateContext(item_id, changes, expected_version), timeout)

    def delete(self, item_id: str, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> ContextAck:
        return self._ask(DeleteContext(item_id), timeout)

    def stats(self, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> ContextStats:
        return self._ask(GetContextStats(), timeout)

    def subscribe(self, filter: ContextFilter | None = None, since_seq: int | None = None,
                  timeout: float = DEFAULT_CALL_TIMEOUT_S) -> "ContextSubscription":
        """Changes that match ``filter``, in order; ``since_seq`` replays logged ones first."""
        return ContextSubscription(self._system, filter or ContextFilter(), since_seq, timeout)


class ContextSubscription:
    """A stream of ContextChange messages, read by a thread of its own.

    The thread keeps its endpoint listening: changes sent to an endpoint that
    nobody reads pile up in Thespian's transmit queue and would stall the
    context actor for everyone. ``next(timeout)`` returns the next change (or
    None); ``seq`` is the last one seen, so after a context actor restart a new
    subscription with ``since_seq=seq`` picks up what was missed (``gap`` says
    when the change log no longer reaches back that far).
    """

    def __init__(self, system: ServiceSystem, filter: ContextFilter, since_seq: int | None,
                 timeout: float):
        self._system, self._context = system, system.info.context
        self._changes: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._reply: Any = None
        self._thread = threading.Thread(target=self._listen, args=(filter, since_seq, timeout),
                                        name="grym-context-subscription", daemon=True)
        self._thread.start()
        self._ready.wait(timeout + 1)
        reply = self._reply
        if not isinstance(reply, ContextSubscribed):
            self._stop.set()
            if isinstance(reply, ErrorReply):
                raise reply.error.to_exception()
            raise TaskTimeout(f"the context actor did not confirm the subscription in {timeout:g} s")
        self.id, self.gap = reply.subscription_id, reply.gap
        self.seq = reply.seq if since_seq is None else since_seq
        for change in reply.missed:
            self._changes.put(change)

    def _listen(self, filter: ContextFilter, since_seq: int | None, timeout: float) -> None:
        with self._system.open_endpoint() as endpoint:
            self._reply = endpoint.ask(self._context, SubscribeContext(filter, since_seq), timeout)
            self._ready.set()
            if not isinstance(self._reply, ContextSubscribed):
                return
            while not self._stop.is_set():
                msg = endpoint.listen(0.1)
                if isinstance(msg, ContextChange) and msg.subscription_id == self._reply.subscription_id:
                    self._changes.put(msg)
            try:
                endpoint.tell(self._context, UnsubscribeContext(self._reply.subscription_id))
            except Exception:  # noqa: BLE001 - the context actor may be gone
                pass

    def next(self, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> ContextChange | None:
        try:
            change = self._changes.get(timeout=timeout)
        except queue.Empty:
            return None
        self.seq = change.seq
        return change

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def __enter__(self) -> "ContextSubscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class HealthMonitor:
    """Health statuses on demand, and callbacks for health events as they happen.

    ``on("service_unhealthy", callback)`` starts one listener thread with its
    own endpoint; callbacks run on that thread, one event at a time.
    """

    def __init__(self, system: ServiceSystem):
        self._system = system
        self._callbacks: dict[str, list[Callable[[HealthEvent], Any]]] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self.last_seq = 0

    def statuses(self, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> dict[str, ServiceStatus]:
        report: HealthReport = self._system.ask(self._system.info.supervisor, GetHealth(), timeout)
        return dict(report.statuses)

    def events(self, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> list[HealthEvent]:
        report: HealthReport = self._system.ask(self._system.info.supervisor, GetHealth(), timeout)
        return list(report.events)

    def on(self, event: str, callback: Callable[[HealthEvent], Any]) -> None:
        from messages.system import HealthEventKind
        kind = HealthEventKind(event).value  # ValueError names the unknown event
        self._callbacks.setdefault(kind, []).append(callback)
        if self._thread is None:
            self._thread = threading.Thread(target=self._listen, name="grym-health", daemon=True)
            self._thread.start()
            if not self._ready.wait(DEFAULT_CALL_TIMEOUT_S):
                raise TaskTimeout("the supervisor did not confirm the health subscription")

    def _listen(self) -> None:
        with self._system.open_endpoint() as endpoint:
            supervisor = self._system.info.supervisor
            reply = endpoint.ask(supervisor, SubscribeHealth(), DEFAULT_CALL_TIMEOUT_S)
            if isinstance(reply, Subscribed):
                self.last_seq = reply.last_seq
                self._ready.set()
            while not self._stop.is_set():
                msg = endpoint.listen(0.2)
                if isinstance(msg, HealthEvent) and msg.seq > self.last_seq:
                    self.last_seq = msg.seq
                    for callback in self._callbacks.get(msg.kind.value, []):
                        try:
                            callback(msg)
                        except Exception:  # noqa: BLE001 - a host callback must not stop the listener
                            log.exception("health_callback_failed", kind=msg.kind.value)
            try:
                endpoint.tell(supervisor, UnsubscribeHealth())
            except Exception:  # noqa: BLE001 - the system may already be gone
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)


def _is_error(reply: Any) -> bool:
    return isinstance(reply, (ErrorReply, PoisonMessage))
