"""The host API: embed the runtime in a Python process, or join a running one.

    with ServiceSystem.start(config) as system:
        service = system.get_service("echo")
        result = service.execute_task(Task(id="t1", type="echo", data=b"hi"))

Every call is bounded by a timeout and ends in a result or a typed exception
(messages.errors). Task calls always return a TaskResult: a failed one carries
its ErrorInfo (``result.unwrap()`` raises it). Calls are safe from many
threads: each thread talks through its own private Thespian endpoint, since
threads sharing one receive each other's replies.

A handle follows its runtime (host/connection.py): when the launcher restarts
it, calls in flight end at once with a retryable SERVICE_UNAVAILABLE, and the
handle re-joins the new start by itself; idempotent calls are retried
(host/retry.py); subscriptions resume.
"""
from __future__ import annotations

import dataclasses
import operator
import os
import queue
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Callable, Mapping

from thespian.actors import ActorSystem, ActorSystemException, PoisonMessage

from messages.context import (
    ContextAck, ContextChange, ContextFilter, ContextGap, ContextItem, ContextItemReply,
    ContextItems, ContextStats, ContextSubscribed, DeleteContext, GetContextForModel,
    GetContextStats, ModelContext, QueryContext, RetrieveContext, StoreContext, SubscribeContext,
    UnsubscribeContext, UpdateContext,
)
from messages.errors import (
    ConfigError, ErrorInfo, ExecutionError, GrymError, InvalidInput, ServiceUnavailable,
    TaskTimeout, retryable,
)
from messages.service import ServiceStatus
from messages.system import (
    ApplyConfig, ApplyReport, ErrorReply, ExecuteTask, GetHealth, GetService, GetServiceMetrics, GetSystemInfo,
    HealthEvent, HealthEventKind, HealthReport, ListServices, MetricsReport, RestartService,
    ServiceInfo, ShutdownSystem, SUPERVISOR_CLASS, SUPERVISOR_GLOBAL_NAME, SystemInfo,
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
from .connection import SLICE_S, Connection, State, Watcher, role_of
from .direct import DirectPath
from runtime.shared_arrays import Lease, SegmentPool
from .retry import ClientMetrics, RetryBudget, RetryPolicy, outcome

log = host_logger()
DEFAULT_CALL_TIMEOUT_S = 10.0
REPLY_MARGIN_S = 2.0  # past a task's own deadline, the router answers; this covers the hops
DIRECT_READY_S = 2.0  # a new handle waits this long at most for its replica of the route table
SUBSCRIBE_RETRY_S = 2.0  # a subscription resumed after a restart: each attempt's wait
# Which of the runtime's actors a call goes to, looked up once the handle is connected
# (so that a call made while it re-joins goes to the new start's).
SUPERVISOR = operator.attrgetter("supervisor")
ROUTER = operator.attrgetter("router")
CONTEXT = operator.attrgetter("context")


class ServiceSystem:
    """A handle on a running actor system. Use ``start`` or ``connect``."""

    secret_file: Path | None = None     # the runtime's key, for another process to join with

    def __init__(self, asys: ActorSystem, info: SystemInfo, config: SystemConfig,
                 launcher: subprocess.Popen | None, workdir: tempfile.TemporaryDirectory | None,
                 owned: bool = True, *, retry: RetryPolicy | None = None):
        self._asys = asys
        self._owned = owned
        self._admin_port = config.system.admin_port
        self._launcher = launcher
        self._workdir = workdir
        self._local = threading.local()
        self._endpoints: weakref.WeakSet[_Endpoint] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._closed = False
        self.retry_policy = retry or RetryPolicy()
        self._budget = RetryBudget(self.retry_policy)
        self._metrics = ClientMetrics()
        self._conn = Connection(asys, info, config.system.bind_address, config.system.admin_port,
                                launcher, self._metrics)
        self.router = RouterHandle(self)
        self.context = ContextHandle(self)
        self.health = HealthMonitor(self)
        self._watcher = Watcher(self)
        self._segments = SegmentPool()  # shared memory lent to tasks' large arrays
        self._direct = DirectPath(self, REPLY_MARGIN_S)  # tasks straight to their services
        self._direct.wait_ready(DIRECT_READY_S)

    @property
    def _info(self) -> SystemInfo:
        return self._conn.info

    # -- starting and joining -----------------------------------------------------
    @classmethod
    def start(cls, config: Mapping[str, Any] | None = None, *, timeout: float | None = None,
              log_format: str = "json", retry: RetryPolicy | None = None) -> "ServiceSystem":
        """Start a new runtime (in clean child processes) and return a handle on it.

        Without ``system.admin_port`` it runs on a free port (``admin_port`` says
        which), so that runtimes embedded in several processes do not collide.
        ``retry``: how idempotent calls are retried (default ``RetryPolicy()``)."""
        raw = dict(config if config is not None else default_config())
        if isinstance(raw.get("system", {}), Mapping):  # anything else: from_dict says why
            raw["system"] = {"admin_port": 0, **raw.get("system", {})}  # 0: the launcher picks
        parsed = SystemConfig.from_dict(raw)  # fail here, with the key, before starting anything
        sys_cfg = parsed.system
        if sys_cfg.admin_port and port_in_use(sys_cfg.bind_address, sys_cfg.admin_port):
            raise ConfigError(f"system.admin_port: port {sys_cfg.admin_port} is already in use",
                              {"key": "system.admin_port"})
        workdir = tempfile.TemporaryDirectory(prefix="grym-launch-")
        # The key that signs every frame (runtime.frames): this host's (new at its first
        # start), handed to the launcher in a private file; the runtime keeps it in its
        # secret_file, where connect() finds it.
        frames.use_secret_file(frames.write_secret_file(Path(workdir.name, "secret.key")))
        frames.limit_message_bytes(sys_cfg.max_message_bytes)
        launcher, status = start_launcher(
            raw, Path(workdir.name), cwd=Path.cwd(), parent_pid=os.getpid(),
            log_format=log_format, timeout_s=timeout or sys_cfg.start_timeout_s + 10)
        if not status.get("ready"):
            workdir.cleanup()
            error = status.get("error", {})
            raise ErrorInfo(error.get("code", "INIT_ERROR"), error.get("message", "")).to_exception()
        try:
            secret = frames.use_secret_file(
                with_admin_port(parsed, status["admin_port"]).secret_file())
            system = cls._join(with_admin_port(parsed, status["admin_port"]), launcher, workdir,
                               retry=retry)
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
                max_message_bytes: int | None = None,
                retry: RetryPolicy | None = None) -> "ServiceSystem":
        """Join a runtime that is already running (a daemon, or another host's).

        ``secret_file``: the runtime's key (``system.secret_file``); the default,
        ``<tmp>/grym-<port>/secret.key``, is where a runtime with no ``log_dir``
        and no ``secret_file`` of its own keeps it, a daemon's or an embedded one's.
        ``max_message_bytes``: the runtime's limit, when it is not the default."""
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
        joined = cls._join(config, None, None, timeout=timeout, owned=False, retry=retry)
        joined.secret_file = secret
        return joined

    @classmethod
    def _join(cls, config: SystemConfig, launcher, workdir, timeout: float = DEFAULT_CALL_TIMEOUT_S,
              owned: bool = True, retry: RetryPolicy | None = None) -> "ServiceSystem":
        restrict_bind(config.system.bind_address)
        asys = ActorSystem(SYSTEM_BASE, capabilities(config), transientUnique=True)
        supervisor = asys.createActor(SUPERVISOR_CLASS, globalName=SUPERVISOR_GLOBAL_NAME)
        info = asys.ask(supervisor, GetSystemInfo(), timeout)
        if not isinstance(info, SystemInfo):
            raise ServiceUnavailable(f"the supervisor did not answer within {timeout:g} s")
        return cls(asys, info, config, launcher, workdir, owned, retry=retry)

    # -- calls --------------------------------------------------------------------
    def _endpoint(self, epoch: int) -> Any:
        """This thread's endpoint, new for each incarnation of the runtime."""
        endpoint = getattr(self._local, "endpoint", None)
        if endpoint is None or endpoint.epoch != epoch:
            if self._closed:
                raise ServiceUnavailable("this ServiceSystem handle is closed")
            if endpoint is not None:
                endpoint.close()
            endpoint = _Endpoint(self._asys, epoch)
            with self._lock:
                self._endpoints.add(endpoint)
            self._local.endpoint = endpoint
        return endpoint.handle

    def ask(self, address: Any, msg: Any, timeout: float,
            expect: Callable[[Any], bool] | None = None) -> Any:
        """Send ``msg`` and wait for its answer; typed errors for every failure.

        ``expect`` tells this call's answer from a late answer to an earlier
        call that timed out on the same endpoint; anything else is dropped.
        While the runtime restarts, the call waits for the handle to re-join it
        (within ``timeout``); a call waiting for an answer when the runtime, or
        the actor it was sent to, goes away ends at once with a retryable
        SERVICE_UNAVAILABLE (it looks every ``SLICE_S``).
        """
        what = type(msg).__name__
        deadline = time.monotonic() + timeout
        epoch, info = self._conn.wait_connected(deadline, what)
        if callable(address):  # which of the runtime's actors, as the current start has them
            address = address(info)
        if address is None:
            raise retryable(f"no actor to send {what} to (it is restarting)")
        endpoint = self._endpoint(epoch)
        sent_to = role_of(info, address)
        try:
            reply = endpoint.ask(address, msg, min(SLICE_S, timeout))
            while True:
                if reply is not None:
                    if expect is None or _is_error(reply) or expect(reply):
                        break
                    log.debug("stale_reply_dropped", reply=type(reply).__name__)
                    reply = None
                gone = self._conn.gone_since(epoch, address, sent_to)
                if gone is not None:
                    with self._metrics.lock:
                        self._metrics.ended_early += 1
                    details = {"sent_to": sent_to or str(address)}
                    if self._conn.state is State.CLOSED:  # it will not come back
                        raise ServiceUnavailable(f"{what} was not answered: {gone}", details)
                    raise retryable(f"{what} was not answered: {gone}", details)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                reply = endpoint.listen(min(SLICE_S, remaining))
        except GrymError:
            raise
        except ActorSystemException as exc:  # its transport, with a runtime going away
            raise retryable(f"could not send {what}: {type(exc).__name__}: {exc}") from None
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
        """Send a task straight to its service (host/direct.py), or else to the router;
        wait for the deadline the router gives it (the system's deadline rule) plus
        the hops, unless ``timeout`` says."""
        task, service = (msg, None) if isinstance(msg, Task) else (msg.task, msg.service)
        lease = Lease(self._segments)  # large arrays go through shared memory, for this task
        try:
            reply = self._send_task(msg, task, service, timeout, lease)
        except GrymError as exc:  # over system.max_message_bytes: refused before sending
            reply = TaskResult.failure(task.id, exc.info())
        finally:
            lease.release()
        self._metrics.count("task", outcome(reply.error))
        return reply

    def _send_task(self, msg: Task | ExecuteTask, task: Task, service: str | None,
                   timeout: float | None, lease: Lease) -> TaskResult:
        shared = lease.export(task.data)
        if shared is not task.data:
            task = dataclasses.replace(task, data=shared)
            msg = task if service is None else ExecuteTask(task, service)
        reply = self._direct.run(task, service, timeout)
        return reply if reply is not None else self._run_routed(msg, task, service, timeout)

    def _run_routed(self, msg: Task | ExecuteTask, task: Task, service: str | None,
                    timeout: float | None) -> TaskResult:
        wait = timeout or self._info.timeout_for(task, service) + REPLY_MARGIN_S
        try:
            reply = self.ask(ROUTER, msg, wait,
                             expect=lambda r: isinstance(r, TaskResult) and r.task_id == task.id)
        except TaskTimeout as exc:
            self._refresh_quietly()  # the router may have been restarted elsewhere
            reply = TaskResult.failure(task.id, exc.info())
        except GrymError as exc:
            reply = TaskResult.failure(task.id, exc.info())
        if not isinstance(reply, TaskResult):
            reply = TaskResult.failure(task.id, ExecutionError(
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
        """Fetch where the router and context actors are now (they move when restarted;
        the handle does this itself when the supervisor says one was)."""
        self._conn.update(self.ask(SUPERVISOR, GetSystemInfo(), timeout))
        return self._info

    def _refresh_quietly(self) -> None:
        try:
            self.refresh(timeout=2.0)
        except GrymError:
            pass

    def call(self, op: str, kind: str | None, timeout: float,
             attempt: Callable[[float], Any]) -> Any:
        """``attempt(seconds left)``, sent again by the retry policy while it fails with
        a retryable error, if ``kind`` ("read", "write") is one the policy retries;
        counted in ``client_metrics()`` by ``op`` and outcome."""
        policy, deadline, retries = self.retry_policy, time.monotonic() + timeout, 0
        while True:
            try:
                result = attempt(max(0.001, deadline - time.monotonic()))
            except GrymError as exc:
                if kind is None or not policy.covers(kind) or not policy.retryable(exc):
                    self._metrics.count(op, outcome(exc))
                    raise
                self._budget.failed()
                delay = policy.backoff_s(retries + 1)
                if retries + 1 >= policy.max_attempts or time.monotonic() + delay >= deadline:
                    self._metrics.count(op, outcome(exc))
                    raise
                if not self._budget.allows_retry():
                    with self._metrics.lock:
                        self._metrics.retries_throttled += 1
                    self._metrics.count(op, outcome(exc))
                    raise
                retries += 1
                self._metrics.retried(op)
                time.sleep(delay)
                continue
            self._budget.succeeded()
            self._metrics.count(op, "ok")
            return result

    def _supervisor_call(self, op: str, msg: Any, timeout: float, kind: str | None = "read") -> Any:
        return self.call(op, kind, timeout, lambda left: self.ask(SUPERVISOR, msg, left))

    def get_service(self, name: str, timeout: float = 60.0) -> "ServiceHandle":
        """The service by name, initialized (a lazy service loads now)."""
        return ServiceHandle(self, self._supervisor_call("get_service", GetService(name), timeout))

    def services(self, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> list[ServiceInfo]:
        return list(self._supervisor_call("services", ListServices(), timeout).services)

    def metrics(self, name: str | None = None, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> list:
        report: MetricsReport = self._supervisor_call("metrics", GetServiceMetrics(name), timeout)
        return list(report.services)

    def restart_service(self, name: str, timeout: float = 60.0) -> ServiceInfo:
        """OTP's restart_child: bring a FAILED (or STOPPED) service back, with a fresh
        restart window; returns its info once it is online. CONFLICT while it runs."""
        return self._supervisor_call("restart_service", RestartService(name), timeout, kind=None)

    def apply(self, config: Mapping[str, Any], dry_run: bool = False, drain_s: float = 10.0,
              timeout: float | None = None) -> ApplyReport:
        """Change the running system to ``config`` without stopping it (``run.py apply``):
        new services start, removed ones drain and stop, changed ones are replaced by
        a rolling update, routes move at once, ``[health]`` and some ``[system]`` keys
        apply in place. Keys of ``[system]`` left out keep their running values.
        Returns the plan (``report.steps``; ``dry_run``: the plan only) once done.
        Raises ConfigError naming the key when the config is invalid or asks for a
        change the running system cannot make (nothing changes), Conflict while
        another apply of a person runs (one that comes during an autoscaler's apply
        waits for it), InitError when a new service did not come up (the old
        ones kept serving; ``info.last_apply`` and a rollout_failed event say why)."""
        if not isinstance(config, Mapping):
            raise ConfigError("config: must be a table (a dict)", {"key": "config"})
        new = SystemConfig.from_dict(config)  # fail here, with the key, before asking
        wait = timeout or new.system.start_timeout_s + drain_s + 30.0
        report = self._supervisor_call("apply", ApplyConfig(dict(config), dry_run, drain_s),
                                       wait, kind=None)
        if report.applied:
            self._refresh_quietly()
        return report

    def client_metrics(self) -> dict[str, Any]:
        """What this handle counted: calls by operation and outcome (``"store:ok"``),
        retries, retries the budget refused, re-joins of a restarted runtime and the
        last outage, calls ended early; and the connection's state now."""
        return self._metrics.snapshot({"state": self._conn.state.value,
                                       "incarnation": self._info.incarnation,
                                       "retry_policy": self.retry_policy})

    # -- ending ----------------------------------------------------------------------
    def shutdown(self, drain_s: float = 10.0) -> None:
        """Stop the runtime: drain accepted tasks, release models, end every process.

        This stops a runtime joined with ``connect`` too (that is what ``run.py
        stop`` does); use ``close`` to leave one running."""
        if self._closed:
            return
        try:
            # A runtime this handle started, caught restarting, is stopped by its
            # launcher below; one joined waits (within the drain) for the re-join.
            if not (self._owned and self._conn.state is not State.CONNECTED):
                try:
                    self.ask(SUPERVISOR, ShutdownSystem(drain_s=drain_s), drain_s + 10)
                except GrymError as exc:
                    log.warning("graceful_shutdown_failed", error=str(exc))
            self._stop_following()
            if self._conn.state is State.CONNECTED:
                self._asys.shutdown()
        finally:
            self._stop_following()
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
            self._stop_following()
            self._close_endpoints()

    def _stop_following(self) -> None:
        self._watcher.stop()
        self._direct.stop()
        self.health.stop()

    def _close_endpoints(self) -> None:
        self._closed = True
        self._segments.close()
        self._conn.close("this ServiceSystem handle is closed")
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

    def __init__(self, asys: ActorSystem, epoch: int):
        self._manager = asys.private()
        self.handle = self._manager.__enter__()
        self.epoch = epoch  # the connection's: a new start of the runtime gets a new endpoint
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
        return self._system._supervisor_call("service_info", GetService(self.name, initialize=False),
                                             timeout)

    def is_initialized(self, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> bool:
        return self.get_status(timeout) in (ServiceStatus.ONLINE, ServiceStatus.DEGRADED)

    def initialize(self, timeout: float = 60.0) -> ServiceInfo:
        return self._system._supervisor_call("get_service", GetService(self.name), timeout)

    def get_metrics(self, timeout: float = DEFAULT_CALL_TIMEOUT_S):
        return self._system.metrics(self.name, timeout)[0]


class RouterHandle:
    def __init__(self, system: ServiceSystem):
        self._system = system

    def route_task(self, task: Task, timeout: float | None = None) -> TaskResult:
        return self._system.run_task(task, timeout)


class ContextHandle:
    """The context repository, through the ContextActor that owns it.

    Reads are retried by the handle's retry policy when the context actor (or the
    runtime) was restarted under them; so are writes, each of which carries an
    idempotency key (``idempotency_key``, or a new one per call), so that a write
    sent again after its acknowledgement was lost applies once.
    """

    def __init__(self, system: ServiceSystem):
        self._system = system

    def _ask(self, op: str, kind: str, msg: Any, timeout: float) -> Any:
        system = self._system
        reply = system.call(op, kind, timeout, lambda left: system.ask(CONTEXT, msg, left))
        if isinstance(reply, ContextAck):  # the host's copy of the context must have it
            system._direct.context.written(reply.seq)
        return reply

    def _key(self, given: str | None) -> str | None:
        return given or (uuid.uuid4().hex if self._system.retry_policy.covers("write") else None)

    def get_context_for_model(self, model_type: str, task_id: str | None = None,
                              priority: int | str | None = None,
                              filter: ContextFilter | None = None,
                              timeout: float = DEFAULT_CALL_TIMEOUT_S) -> dict[str, Any]:
        reply: ModelContext = self._ask(
            "get_context_for_model", "read",
            GetContextForModel(model_type, task_id, priority, filter), timeout)
        return dict(reply.data)

    def store(self, item: ContextItem, timeout: float = DEFAULT_CALL_TIMEOUT_S,
              idempotency_key: str | None = None) -> ContextAck:
        return self._ask("store", "write", StoreContext(item, self._key(idempotency_key)),
                         timeout)

    def retrieve(self, item_id: str, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> ContextItem:
        reply: ContextItemReply = self._ask("retrieve", "read", RetrieveContext(item_id), timeout)
        return reply.item

    def query(self, filter: ContextFilter | None = None,
              timeout: float = DEFAULT_CALL_TIMEOUT_S) -> ContextItems:
        return self._ask("query", "read", QueryContext(filter or ContextFilter()), timeout)

    def update(self, item_id: str, changes: Mapping[str, Any], expected_version: int | None = None,
               timeout: float = DEFAULT_CALL_TIMEOUT_S,
               idempotency_key: str | None = None) -> ContextAck:
        return self._ask("update", "write", UpdateContext(
            item_id, changes, expected_version, self._key(idempotency_key)), timeout)

    def delete(self, item_id: str, timeout: float = DEFAULT_CALL_TIMEOUT_S,
               idempotency_key: str | None = None) -> ContextAck:
        return self._ask("delete", "write", DeleteContext(item_id, self._key(idempotency_key)),
                         timeout)

    def stats(self, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> ContextStats:
        return self._ask("context_stats", "read", GetContextStats(), timeout)

    def subscribe(self, filter: ContextFilter | None = None, since_seq: int | None = None,
                  timeout: float = DEFAULT_CALL_TIMEOUT_S) -> "ContextSubscription":
        """Changes that match ``filter``, in order; ``since_seq`` replays logged ones first."""
        return ContextSubscription(self._system, filter or ContextFilter(), since_seq, timeout)


class ContextSubscription:
    """A stream of ContextChange messages, read by a thread of its own.

    The thread keeps its endpoint listening: changes sent to an endpoint that
    nobody reads pile up in Thespian's transmit queue and would stall the
    context actor for everyone. ``next(timeout)`` returns the next change (or
    None); ``seq`` is the last one seen (so a new subscription with
    ``since_seq=seq``, from another process too, picks up what was missed;
    ``gap`` says when the change log no longer reached back that far).

    When the context actor or the whole runtime is restarted, the thread
    subscribes again from the last change it received: the changes logged since
    follow, and where the log no longer reaches back (a restarted actor's log
    starts empty) ``next`` returns a ``ContextGap`` first: read the state again.
    ``resumes`` counts these re-subscriptions.
    """

    def __init__(self, system: ServiceSystem, filter: ContextFilter, since_seq: int | None,
                 timeout: float):
        self._system, self._filter = system, filter
        self._changes: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._reply: Any = None
        self._last = since_seq  # the last change queued: where a resumed subscription starts
        self.resumes = 0
        self._thread = threading.Thread(target=self._listen, args=(timeout,),
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

    def _listen(self, timeout: float) -> None:
        conn, first = self._system._conn, True
        while not self._stop.is_set():
            try:
                epoch, info = conn.wait_connected(time.monotonic() + (timeout if first else 0.5))
            except GrymError as exc:
                if first or conn.state is State.CLOSED:
                    self._fail(ErrorReply(exc.info()))
                    return
                continue
            context = info.context
            if context is None:  # between two generations of the context actor
                self._stop.wait(0.05)
                continue
            with self._system.open_endpoint() as endpoint:
                reply = self._subscribe(endpoint, context, timeout if first else SUBSCRIBE_RETRY_S)
                if first:
                    self._reply, first = reply, False
                    if not isinstance(reply, ContextSubscribed):
                        self._ready.set()
                        return
                if not isinstance(reply, ContextSubscribed):
                    continue  # the new context actor is not up yet: again
                self._accept(reply, resumed=self._ready.is_set())
                self._ready.set()
                self._pump(endpoint, reply.subscription_id, epoch, context)

    def _subscribe(self, endpoint: Any, context: Any, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        reply = endpoint.ask(context, SubscribeContext(self._filter, self._last), timeout)
        while isinstance(reply, ContextChange):  # a late change of a subscription left behind
            reply = endpoint.listen(max(0.0, deadline - time.monotonic()))
        return reply

    def _accept(self, reply: ContextSubscribed, resumed: bool) -> None:
        if resumed:
            self.resumes += 1
            if reply.gap:
                self._changes.put(ContextGap(
                    after_seq=self._last, seq=reply.seq, subscription_id=reply.subscription_id,
                    reason="the subscription was resumed after a restart, and the change log "
                           "no longer reaches back to the last change received"))
        for change in reply.missed:
            self._changes.put(change)
        self._last = reply.seq  # every matching change up to it is queued (or lost, and said)

    def _pump(self, endpoint: Any, subscription_id: str, epoch: int, context: Any) -> None:
        conn = self._system._conn
        while not self._stop.is_set() and conn.epoch == epoch and conn.info.context == context:
            msg = endpoint.listen(0.1)
            if isinstance(msg, ContextChange) and msg.subscription_id == subscription_id \
                    and msg.seq > self._last:
                self._changes.put(msg)
                self._last = msg.seq
        if self._stop.is_set() and conn.state is State.CONNECTED:
            try:
                endpoint.tell(context, UnsubscribeContext(subscription_id))
            except Exception:  # noqa: BLE001 - the context actor may be gone
                pass

    def _fail(self, reply: Any) -> None:
        self._reply = reply
        self._ready.set()

    def next(self, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> ContextChange | ContextGap | None:
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

    The events come from the handle's watcher (host/connection.py), which keeps one
    health subscription across restarts of the runtime; after a new start it says
    so with a ``runtime_restarted`` event (events of the old start after the last
    one delivered may be missing). ``on("service_unhealthy", callback)``: callbacks
    run on a thread of their own, one event at a time.
    """

    def __init__(self, system: ServiceSystem):
        self._system = system
        self._callbacks: dict[str, list[Callable[[HealthEvent], Any]]] = {}
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.last_seq = 0

    def statuses(self, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> dict[str, ServiceStatus]:
        report: HealthReport = self._system._supervisor_call("health", GetHealth(), timeout)
        return dict(report.statuses)

    def events(self, timeout: float = DEFAULT_CALL_TIMEOUT_S) -> list[HealthEvent]:
        report: HealthReport = self._system._supervisor_call("health", GetHealth(), timeout)
        return list(report.events)

    def on(self, event: str, callback: Callable[[HealthEvent], Any]) -> None:
        kind = HealthEventKind(event).value  # ValueError names the unknown event
        self._callbacks.setdefault(kind, []).append(callback)
        if self._thread is None:
            self._thread = threading.Thread(target=self._dispatch, name="grym-health", daemon=True)
            self._thread.start()
        if not self._system._watcher.subscribed.wait(DEFAULT_CALL_TIMEOUT_S):
            raise TaskTimeout("the supervisor did not confirm the health subscription")

    def _deliver(self, event: HealthEvent) -> None:
        """From the watcher: an event, in order."""
        self.last_seq = event.seq
        if self._callbacks.get(event.kind.value):
            self._queue.put(event)

    def _dispatch(self) -> None:
        while not self._stop.is_set():
            try:
                event = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            for callback in list(self._callbacks.get(event.kind.value, [])):
                try:
                    callback(event)
                except Exception:  # noqa: BLE001 - a host callback must not stop the others
                    log.exception("health_callback_failed", kind=event.kind.value)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)


def _is_error(reply: Any) -> bool:
    return isinstance(reply, (ErrorReply, PoisonMessage))
