"""The TaskRouter actor: task type -> service, context in, timings out.

Every accepted task is answered exactly once: with the service's result, or
with a typed error when its deadline passes, its service's process dies, or
the system drains. Refusals (unknown type, service down, overloaded,
shutting down) are answered at once.
"""
from __future__ import annotations

import itertools
import time
from typing import Any

from thespian.actors import Actor, WakeupMessage

from messages.context import ContextItem, GetContextForModel, ModelContext, StoreContext
from messages.errors import ErrorCode, ErrorInfo, GrymError, PermissionDenied, TaskTimeout
from messages.service import ServiceTask, ServiceTaskDone
from messages.system import (
    ApplyRoutes, ContextMoved, DirectTaskMetrics, Drain, DrainDone, ErrorReply, ExecuteTask,
    GetRouterMetrics, GetRoutes, Routes, RoutesApplied, RouterSetup, ServiceDirectoryUpdate,
    replica_service,
)
from messages.task import Task, TaskResult, effective_timeout_s

from .base import GrymActor
from routing.history import task_history_content
from routing.metrics import RouterMetrics
from routing.table import Pending, PendingTasks, RouteTable, pinned_version

CONTEXT_FETCH_TIMEOUT_S = 0.5  # past this a task runs without context rather than wait


class TaskRouter(GrymActor, Actor):
    handlers = {
        RouterSetup: "on_setup", ServiceDirectoryUpdate: "on_directory",
        ContextMoved: "on_context_moved", Task: "on_task",
        ExecuteTask: "on_execute", ServiceTaskDone: "on_done", ModelContext: "on_context",
        ErrorReply: "on_error_reply", WakeupMessage: "on_wakeup", Drain: "on_drain",
        GetRoutes: "on_get_routes", GetRouterMetrics: "on_get_metrics",
        DirectTaskMetrics: "on_direct_metrics",
        ApplyRoutes: "on_apply_routes",
    }

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.table = RouteTable(routes={})
        self.pending = PendingTasks()
        self.ids = itertools.count(1)
        self.context = None
        self.token: str | None = None
        self.fetch_context: frozenset[str] = frozenset()
        self.default_timeout_s: float | None = None  # from RouterSetup; tasks wait for it
        self.timer_at: float | None = None
        self.drain_waiter = None
        self.late_results = 0
        self.metrics = RouterMetrics()
        # Applies waiting for the tasks sent to the generations they replaced or
        # removed: ref -> (the supervisor, those (service, generation) pairs).
        self.retiring: dict[int, tuple[Any, set[tuple[str, int]]]] = {}

    # -- set-up from the supervisor -----------------------------------------------
    def on_setup(self, msg: RouterSetup, sender: Any) -> None:
        first = self.token is None
        if first:
            self.token = msg.token
        self._from_supervisor(msg)
        self.table.set_routes(msg.routes)
        self.context, self.fetch_context = msg.context, msg.fetch_context
        self.default_timeout_s = msg.default_timeout_s
        for entry in msg.directory:
            self.table.update(entry)
        if first:
            self.release_held()

    def on_directory(self, msg: ServiceDirectoryUpdate, sender: Any) -> None:
        if self.hold_until_set_up(msg, sender):
            return
        self._from_supervisor(msg)
        self.table.update(msg)
        if msg.lost_reason:
            code = ErrorCode(msg.lost_code or ErrorCode.EXECUTION_ERROR)
            for p in self.pending.lost(msg.name, msg.generation):
                self._finish(p, TaskResult.failure(p.task.id, ErrorInfo(
                    code, f"service {msg.name!r} {msg.lost_reason} while running task "
                          f"{p.task.id!r}", {"service": msg.name})))

    def on_context_moved(self, msg: ContextMoved, sender: Any) -> None:
        if self.hold_until_set_up(msg, sender):
            return
        self._from_supervisor(msg)
        self.context = msg.address
        self.log.info("context_moved", generation=msg.generation, up=msg.address is not None)

    def is_set_up(self) -> bool:
        return self.token is not None

    def _from_supervisor(self, msg: Any) -> None:
        """Set-up and directory changes come from the supervisor that set us up, only.

        They carry its token (sender addresses do not compare reliably across
        start methods). Not a defence against someone who can reach the ports,
        who can run code anyway: a guard against stray and malformed messages."""
        if self.token is None or msg.token != self.token:
            raise PermissionDenied("only the supervisor changes the router's set-up")

    def on_apply_routes(self, msg: ApplyRoutes, sender: Any) -> None:
        """A config apply moves traffic: the whole table changes in this one message."""
        if self.hold_until_set_up(msg, sender):
            return
        self._from_supervisor(msg)
        old = self.table.apply(msg)
        self.fetch_context, self.default_timeout_s = msg.fetch_context, msg.default_timeout_s
        self.log.info("routes_applied", routes=len(msg.routes), replaced=sorted(old),
                      draining=self.pending.running_on(old))
        self.retiring[msg.ref] = (sender, old)
        self.wakeupAfter(msg.drain_s, payload=("retire", msg.ref))
        self._maybe_retired()

    def _maybe_retired(self, expired: int | None = None) -> None:
        """Tell the supervisor when no task sent to a replaced generation is unanswered
        (``expired``: that apply's drain time is up; say how many still are)."""
        for ref, (waiter, old) in list(self.retiring.items()):
            left = self.pending.running_on(old)
            if not left or ref == expired:
                del self.retiring[ref]
                self.send(waiter, RoutesApplied(ref=ref, answered_with_timeout=left,
                                                token=self.token))

    def on_get_routes(self, msg: GetRoutes, sender: Any) -> None:
        self.send(sender, Routes(dict(self.table.routes), tuple(sorted(self.table.services))))

    # -- tasks ------------------------------------------------------------------------
    def on_task(self, task: Task, sender: Any) -> None:
        if self.hold_until_set_up(task, sender):
            return
        try:
            service = self.table.service_for(task.type, pinned_version(task))
        except GrymError as exc:
            self.metrics.record_refusal("none", "unrouted", exc.code.value)
            raise
        self._accept(task, sender, service, direct=False)

    def on_execute(self, msg: ExecuteTask, sender: Any) -> None:
        if self.hold_until_set_up(msg, sender):
            return
        self._accept(msg.task, sender, msg.service, direct=True)

    def on_direct_metrics(self, msg: DirectTaskMetrics, sender: Any) -> None:
        self.metrics.merge(msg.report)

    def on_get_metrics(self, msg: GetRouterMetrics, sender: Any) -> None:
        in_flight = {name: e.in_flight for name, e in self.table.services.items()}
        self.send(sender, self.metrics.snapshot(in_flight, self.late_results))

    def _accept(self, task: Task, caller: Any, service: str, direct: bool) -> None:
        now = time.monotonic()
        try:
            entry = self.table.admit(service)
        except GrymError as exc:  # answered by the base class as a failed TaskResult
            self.metrics.record_refusal(service if service in self.table.services else "none",
                                        self._type_label(task.type), exc.code.value)
            raise
        entry.in_flight += 1
        service = entry.name  # the replica it goes to
        timeout = effective_timeout_s(task, entry.task_timeout_s, self.default_timeout_s)
        p = Pending(next(self.ids), task, caller, service, now, now + timeout,
                    entry.generation, direct=direct)
        self.pending.add(p)
        self._arm_timer(p.deadline, now)
        if (not direct and task.context is None and service in self.fetch_context
                and self.context is not None):
            p.stage = "context"
            p.context_started = now
            self.send(self.context, GetContextForModel(
                model_type=entry.kind or service, task_id=task.id, ref=p.request_id))
            self._arm_timer(now + CONTEXT_FETCH_TIMEOUT_S, now)
        else:
            self._dispatch(p, task, now)

    def _dispatch(self, p: Pending, task: Task, now: float) -> None:
        entry = self.table.services.get(p.service)
        if entry is None or entry.address is None or entry.generation != p.generation:
            # The service went down (or restarted, or an apply replaced or removed it)
            # while the context was fetched. A routed task whose service is gone
            # follows its type's route as it is now.
            try:
                if p.service not in self.table.services:
                    p.service = replica_service(p.service) if p.direct else \
                        self.table.service_for(task.type, pinned_version(task))
                entry = self.table.admit(p.service)
                p.service = entry.name
            except GrymError as exc:
                self._finish(p, TaskResult.failure(task.id, exc.info()))
                return
            entry.in_flight += 1
            p.generation = entry.generation
        p.stage = "service"
        self.send(entry.address, ServiceTask(p.request_id, task, max(0.001, p.deadline - now)))

    def on_context(self, msg: ModelContext, sender: Any) -> None:
        p = self.pending.get(msg.ref) if isinstance(msg.ref, int) else None
        if p is not None and p.stage == "context":
            now = time.monotonic()
            p.context_fetch_ms = (now - p.context_started) * 1000
            self._dispatch(p, p.task.with_context(msg.data), now)

    def on_error_reply(self, msg: ErrorReply, sender: Any) -> None:
        p = self.pending.get(msg.ref) if isinstance(msg.ref, int) else None
        if p is not None and p.stage == "context":
            # Context is help, not a precondition: run without it.
            self.log.warning("context_fetch_failed", task_id=p.task.id, error=str(msg.error))
            now = time.monotonic()
            p.context_fetch_ms = (now - p.context_started) * 1000
            self._dispatch(p, p.task, now)

    def on_done(self, msg: ServiceTaskDone, sender: Any) -> None:
        p = self.pending.get(msg.request_id)
        if p is None:
            self.late_results += 1  # already answered (deadline or lost service)
            return
        now = time.monotonic()
        m = msg.result.metrics
        total_ms = (now - p.received_at) * 1000
        routing_ms = max(0.0, total_ms - p.context_fetch_ms - m.queue_ms - m.execution_ms)
        result = msg.result.with_metrics(routing_ms=routing_ms, context_fetch_ms=p.context_fetch_ms,
                                         total_ms=total_ms)
        self._finish(p, result)
        if p.task.store_results and self.context is not None:
            self.send(self.context, StoreContext(ContextItem(
                type="task_history", content=task_history_content(p.task, result, p.service),
                source=p.service, task_id=p.task.id)))

    def _finish(self, p: Pending, result: TaskResult) -> None:
        """Answer the caller once and forget the task."""
        self.pending.pop(p.request_id)
        self.metrics.record(p.service, self._type_label(p.task.type), result)
        entry = self.table.services.get(p.service)
        if entry is not None and entry.generation == p.generation and entry.in_flight > 0:
            entry.in_flight -= 1
        self.send(p.caller, result)
        self.log.debug("task_answered", task_id=p.task.id, service=p.service,
                       status=result.status.value, total_ms=round(result.metrics.total_ms, 3))
        if self.retiring:
            self._maybe_retired()
        if self.drain_waiter is not None and not self.pending:
            self._drain_done(0)

    def _type_label(self, task_type: str) -> str:
        return task_type if task_type in self.table.routes else "direct"

    # -- deadlines and draining ----------------------------------------------------------
    def _arm_timer(self, at: float, now: float) -> None:
        # Thespian timers cannot be cancelled: each carries the time it was set
        # for, and only the one that matches timer_at is acted on.
        if self.timer_at is None or at < self.timer_at:
            self.timer_at = at
            self.wakeupAfter(max(0.0, at - now), payload=("deadline", at))

    def on_wakeup(self, msg: WakeupMessage, sender: Any) -> None:
        now = time.monotonic()
        if isinstance(msg.payload, tuple) and msg.payload[:1] == ("retire",):
            self._maybe_retired(expired=msg.payload[1])
            return
        if msg.payload != ("deadline", self.timer_at) and msg.payload != ("drain",):
            return  # superseded by an earlier timer
        if msg.payload == ("drain",):
            if self.drain_waiter is not None:
                # Set aside while the rest is answered: _finish would report the
                # drain done with none timed out when it answers the last one.
                waiter, self.drain_waiter = self.drain_waiter, None
                expired = list(self.pending)
                for p in expired:
                    self._finish(p, self._timeout(p, now, "the shutdown drain ended"))
                self.drain_waiter = waiter
                self._drain_done(len(expired))
            return
        self.timer_at = None
        for p in self.pending.expired(now):
            self._finish(p, self._timeout(p, now, "its deadline passed"))
        for p in list(self.pending):  # context that did not come in time
            if p.stage == "context" and now - p.context_started > CONTEXT_FETCH_TIMEOUT_S:
                p.context_fetch_ms = (now - p.context_started) * 1000
                self._dispatch(p, p.task, now)
        nxt = self.pending.next_deadline()
        if nxt is not None:
            if any(p.stage == "context" for p in self.pending):
                nxt = min(nxt, now + CONTEXT_FETCH_TIMEOUT_S)
            self._arm_timer(nxt, now)

    def _timeout(self, p: Pending, now: float, why: str) -> TaskResult:
        waited = now - p.received_at
        return TaskResult.failure(p.task.id, TaskTimeout(
            f"task {p.task.id!r} on service {p.service!r}: {why} after {waited:.3f} s",
            {"service": p.service, "stage": p.stage}).info())

    def on_drain(self, msg: Drain, sender: Any) -> None:
        self._from_supervisor(msg)
        self.table.draining = True
        self.drain_waiter = sender
        if not self.pending:
            self._drain_done(0)
        else:
            self.wakeupAfter(msg.drain_s, payload=("drain",))

    def _drain_done(self, timed_out: int) -> None:
        waiter, self.drain_waiter = self.drain_waiter, None
        self.send(waiter, DrainDone(answered_with_timeout=timed_out, token=self.token))

