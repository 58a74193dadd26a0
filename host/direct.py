"""The host's fast path: it routes its own tasks straight to the services.

Why (issue 14; measured with py-spy and a probe on Thespian's transmit queue):
Thespian's TCP transport keeps one frame in flight per sender and target
(``TCPTransport._next_XMIT_1`` queues the next one until the receiver's
acknowledgement is read back). Every routed task crosses the router -> service
and service -> router links, which all callers share, so with several callers
the tasks queue there, one acknowledgement round trip each: at 4 callers 80 %
of the router's frames to the echo service waited for that slot (5 ms each)
while the router was 36 % and the service 70 % idle; at 16 callers 140 ms each.
A host thread that sends its task straight to the service has a sender-target
pair of its own, both ways, and a task makes two frames instead of four. Ray
Serve's handles route in the caller the same way.

For these tasks the host does what the router did, by the router's rules: the
table is the router's own class (``routing.table.RouteTable``, plain code), fed
by the messages the router gets, which the supervisor also sends to every host
that subscribed (``SubscribeRoutes``); the deadline is
``messages.task.effective_timeout_s``, which the service applies to a task sent
to it (it answers TIMEOUT there); a service lost while running the task is
answered with the router's error, from the same directory update; the result
carries the same routing / context / queue / compute split, and the counts go
to the router (``DirectTaskMetrics``), which serves every task's metrics. What
the replica cannot route itself (no route, a refusal, a service that is not up,
a replica not yet in step) goes through the router as before; the router stays
the way in for external actors.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from thespian.actors import ActorSystemException, PoisonMessage

from routing.history import task_history_content
from routing.metrics import RouterMetrics
from routing.table import RouteTable, pinned_version
from messages.context import ContextItem, StoreContext
from messages.errors import (
    ErrorCode, ErrorInfo, ExecutionError, GrymError, InvalidInput, TaskTimeout, is_retryable,
    retryable,
)
from messages.system import (
    ApplyRoutes, ContextMoved, DirectTaskMetrics, Drain, RouterSetup, ServiceDirectoryUpdate,
    SubscribeRoutes, UnsubscribeRoutes,
)
from messages.task import Task, TaskResult, effective_timeout_s
from runtime.logs import host_logger

from .connection import SLICE_S, State
from .background import Background
from .context_feed import ContextFeed
from .outbox import Outbox

if TYPE_CHECKING:
    from .system import ServiceSystem

log = host_logger()
SUBSCRIBE_S = 2.0          # the supervisor's answer to SubscribeRoutes
FEED_POLL_S = 0.05         # the feed thread's listen: how late it sees a change, at most
METRICS_FLUSH_S = 0.25     # direct tasks' counts go to the router at least this often
LOST_KEPT = 256            # lost generations remembered (a task waits on one for its deadline at most)


@dataclass(frozen=True)
class Target:
    """Where one task goes, and what the router would have given it."""

    service: str
    address: Any
    generation: int
    kind: str
    timeout_s: float       # the deadline rule's answer for this task on this service
    wants_context: bool    # routed to a service whose tasks get context


class RouteReplica:
    """The router's table as the router has it, from the same messages; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._table = RouteTable(routes={})
        self._fetch_context: frozenset[str] = frozenset()
        self._default_timeout_s: float | None = None   # None: not in step (yet, or any more)
        self._lost: OrderedDict[tuple[str, int], tuple[str, ErrorCode]] = OrderedDict()
        self.context: Any = None
        # The host connection's epoch of the set-up (host/connection.py): a table of a
        # start of the runtime that went away routes nothing, even before its reset.
        self._epoch: int | None = None

    @property
    def ready(self) -> bool:
        return self._default_timeout_s is not None

    def reset(self) -> None:
        """Out of step (the runtime went away): route nothing until the next set-up."""
        with self._lock:
            self._default_timeout_s = None

    def apply(self, msg: Any, epoch: int | None = None) -> bool:
        """Apply what the router would apply; False for a message of no concern here.
        ``epoch``: the connection's, for a set-up."""
        with self._lock:
            if isinstance(msg, RouterSetup):
                self._epoch = epoch
                self._table = RouteTable(routes={})
                self._table.set_routes(msg.routes)
                for entry in msg.directory:
                    self._table.update(entry)
                self.context, self._fetch_context = msg.context, msg.fetch_context
                self._default_timeout_s = msg.default_timeout_s
            elif isinstance(msg, ServiceDirectoryUpdate):
                if not msg.retiring:
                    self._table.update(msg)
                if msg.lost_reason:
                    self._lost[(msg.name, msg.generation)] = (
                        msg.lost_reason, ErrorCode(msg.lost_code or ErrorCode.EXECUTION_ERROR))
                    while len(self._lost) > LOST_KEPT:
                        self._lost.popitem(last=False)
            elif isinstance(msg, ApplyRoutes):
                for entry in msg.directory:
                    self._table.replace(entry)
                for name in msg.removed:
                    self._table.services.pop(name, None)
                self._table.set_routes(msg.routes)
                self._fetch_context = msg.fetch_context
                self._default_timeout_s = msg.default_timeout_s
            elif isinstance(msg, ContextMoved):
                self.context = msg.address
            elif isinstance(msg, Drain):
                self._table.draining = True
            else:
                return False
            return True

    def target(self, task: Task, service: str | None = None,
               epoch: int | None = None) -> Target | None:
        """Where the router would send ``task`` (to ``service`` for ExecuteTask), or
        None when the router must decide (it also gives every refusal, and routes
        while the table is of another ``epoch`` of the host's connection)."""
        with self._lock:
            if self._default_timeout_s is None or (epoch is not None and epoch != self._epoch):
                return None
            try:
                name = service if service is not None else \
                    self._table.service_for(task.type, pinned_version(task))
                entry = self._table.admit(name)
            except GrymError:
                return None
            entry.in_flight += 1  # this host's own: it picks the replica with the fewest
            return Target(entry.name, entry.address, entry.generation, entry.kind or name,
                          effective_timeout_s(task, entry.task_timeout_s, self._default_timeout_s),
                          wants_context=service is None and task.context is None
                          and entry.name in self._fetch_context)

    def done(self, target: Target) -> None:
        """A task sent to ``target`` was answered (or given up on)."""
        with self._lock:
            entry = self._table.services.get(target.service)
            if entry is not None and entry.generation == target.generation and entry.in_flight:
                entry.in_flight -= 1

    def lost(self, service: str, generation: int) -> tuple[str, ErrorCode] | None:
        with self._lock:
            return self._lost.get((service, generation))

    def type_label(self, task_type: str) -> str:
        """The router's metrics label for a task type (bounded: routed types only)."""
        with self._lock:
            return task_type if task_type in self._table.routes else "direct"


class DirectPath:
    """Runs a task straight on its service; ``run`` returns None to leave it to the router."""

    def __init__(self, system: "ServiceSystem", reply_margin_s: float):
        self._system = system
        self._reply_margin_s = reply_margin_s  # past the service's deadline: the hops
        self.replica = RouteReplica()
        self.context = ContextFeed(system, self.replica)  # the shared context, copied here
        self._metrics = RouterMetrics()
        self._metrics_lock = threading.Lock()
        self._last_flush = 0.0
        self.sent = 0  # tasks this path ran (the rest went through the router)
        self.outbox = Outbox(system)  # counts and history, sent off the callers' threads
        self._feed = RouteFeed(system, self)

    def wait_ready(self, timeout: float) -> bool:
        """Wait for the replica's first set-up (a host's first tasks then go direct too)."""
        deadline = time.monotonic() + timeout
        while not self.replica.ready and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.replica.ready

    def stop(self) -> None:
        self._feed.stop()
        self.context.stop()
        self.outbox.stop()

    def run(self, task: Task, service: str | None, timeout: float | None) -> TaskResult | None:
        epoch = self._system._conn.epoch  # the start of the runtime the replica's target is of
        target = self.replica.target(task, service, epoch)
        if target is None:
            return None
        try:
            return self._run(task, target, timeout, epoch)
        finally:
            self.replica.done(target)

    def _run(self, task: Task, target: Target, timeout: float | None,
             epoch: int) -> TaskResult | None:
        context_ms = 0.0
        if target.wants_context:
            found = self.context.for_task(target, task)
            if found is None:
                return None  # only the context actor can answer exactly: the router asks it
            context, context_ms = found
            if context is not None:
                task = task.with_context(context)
        started = time.monotonic()
        self.sent += 1
        result = self._send(task, target, timeout or target.timeout_s + self._reply_margin_s,
                            epoch)
        if result is None:
            # Refused unrun by a generation a config apply replaced, or the runtime was
            # restarted since the target was chosen: the router knows.
            return None
        total_ms = (time.monotonic() - started) * 1000 + context_ms
        m = result.metrics
        result = result.with_metrics(
            routing_ms=max(0.0, total_ms - context_ms - m.queue_ms - m.execution_ms),
            context_fetch_ms=context_ms, total_ms=total_ms)
        self._record(target.service, self.replica.type_label(task.type), result)
        if task.store_results:
            self._store_history(task, result, target.service)
        return result

    def _send(self, task: Task, target: Target, wait: float,
              target_epoch: int) -> TaskResult | None:
        system, conn = self._system, self._system._conn
        deadline = time.monotonic() + wait
        try:
            epoch, _ = conn.wait_connected(deadline, "Task")
            if epoch != target_epoch:
                return None  # the target is of a start of the runtime that went away
            endpoint = system._endpoint(epoch)
            # ask, not tell: Thespian's tell blocks until the frame is sent, and to a service
            # that was just killed it retries for 35 s (TRANSMIT_RETRY_PERIOD); ask's wait is
            # bounded, and the loop below notices the lost service.
            send = lambda wait_s: endpoint.ask(target.address, task, wait_s)  # noqa: E731
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TaskTimeout(f"no answer to Task within {wait:g} s", {"timeout_s": wait})
                reply = send(min(SLICE_S, remaining))
                send = endpoint.listen
                if isinstance(reply, TaskResult) and reply.task_id == task.id:
                    if reply.error is not None and is_retryable(reply.error):
                        return None
                    return reply
                if isinstance(reply, PoisonMessage):
                    raise ExecutionError(f"Task could not be handled: {reply.details}")
                if reply is not None:
                    log.debug("stale_reply_dropped", reply=type(reply).__name__)
                    continue
                gone = conn.gone_since(epoch, target.address, None)
                if gone is not None:
                    raise retryable(f"Task was not answered: {gone}",
                                    {"service": target.service})
                lost = self.replica.lost(target.service, target.generation)
                if lost is not None:
                    reason, code = lost
                    return TaskResult.failure(task.id, ErrorInfo(
                        code, f"service {target.service!r} {reason} while running task "
                              f"{task.id!r}", {"service": target.service}))
        except GrymError as exc:
            return TaskResult.failure(task.id, exc.info())
        except ActorSystemException as exc:  # its transport, with a runtime going away
            return TaskResult.failure(task.id, retryable(
                f"could not send Task: {type(exc).__name__}: {exc}").info())
        except Exception as exc:  # noqa: BLE001 - e.g. data that cannot be pickled
            return TaskResult.failure(task.id, InvalidInput(
                f"could not send Task: {type(exc).__name__}: {exc}").info())

    # -- what the router did after an answer ------------------------------------------
    def _record(self, service: str, task_type: str, result: TaskResult) -> None:
        with self._metrics_lock:
            self._metrics.record(service, task_type, result)
            idle = time.monotonic() - self._last_flush >= METRICS_FLUSH_S
        if idle:  # the first task after a quiet spell is counted at once; the feed does the rest
            self.flush_metrics()

    def flush_metrics(self) -> None:
        """Queue the counts since the last flush for the router (never waits)."""
        with self._metrics_lock:
            if not self._metrics.requests:
                return
            report = self._metrics.snapshot({}, 0)
            self._metrics = RouterMetrics()
            self._last_flush = time.monotonic()
        # No router (between two of its generations): these counts are dropped.
        self.outbox.put(self._system._conn.epoch, self._system._info.router,
                        DirectTaskMetrics(report))

    def _store_history(self, task: Task, result: TaskResult, service: str) -> None:
        # As the router: history is best effort.
        self.outbox.put(self._system._conn.epoch, self.replica.context, StoreContext(ContextItem(
            type="task_history", content=task_history_content(task, result, service),
            source=service, task_id=task.id)))


class RouteFeed(Background):
    """The thread that keeps the replica in step: subscribed to the supervisor of the
    runtime's current start, reading every message (an endpoint nobody reads would
    stall the supervisor), and queueing the direct tasks' counts for the router."""

    def __init__(self, system: "ServiceSystem", path: DirectPath):
        self._system, self._path = system, path
        self._start("grym-routes")

    def _run(self) -> None:
        conn, replica = self._system._conn, self._path.replica
        while not self._stop.is_set() and conn.state is not State.CLOSED:
            try:
                epoch, info = conn.wait_connected(time.monotonic() + 0.5, "SubscribeRoutes")
            except GrymError:
                continue
            try:
                with self._system.open_endpoint() as endpoint:
                    self._follow(endpoint, epoch, info.supervisor)
            except Exception as exc:  # noqa: BLE001 - a transport in a bad way: again
                log.debug("route_feed_error", error=f"{type(exc).__name__}: {exc}")
            replica.reset()
            self._stop.wait(FEED_POLL_S)

    def _follow(self, endpoint: Any, epoch: int, supervisor: Any) -> None:
        conn, path = self._system._conn, self._path
        reply = endpoint.ask(supervisor, SubscribeRoutes(), SUBSCRIBE_S)
        while reply is not None and not isinstance(reply, RouterSetup):
            reply = endpoint.listen(SUBSCRIBE_S)  # an update that overtook it is in the set-up
        if reply is None:
            return
        path.replica.apply(reply, epoch)
        try:
            while not self._stop.is_set() and conn.epoch == epoch:
                msg = endpoint.listen(FEED_POLL_S)
                if msg is not None and not path.replica.apply(msg):
                    log.debug("route_feed_ignored", message=type(msg).__name__)
                if time.monotonic() - path._last_flush >= METRICS_FLUSH_S:
                    path.flush_metrics()
        finally:
            path.flush_metrics()
            if conn.epoch == epoch and conn.state is State.CONNECTED:
                endpoint.tell(supervisor, UnsubscribeRoutes())

