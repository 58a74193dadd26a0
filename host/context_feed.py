"""The host's copy of the shared context (context/replica.py), kept by a subscription
to the ContextActor: a task the host routes itself gets its context without a
round trip (the router's fetch was one per task: 1.35-1.4x the task's time).

One thread with its own endpoint subscribes to the context actor of the runtime's
current start (it follows the route table's ContextMoved and the handle's
re-joins), reads the store in pages, then applies every change; it keeps reading,
since changes sent to an endpoint nobody reads would stall the context actor.
While the copy is not in step, or cannot answer a task exactly, the task goes
through the router, which asks the actor as before.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from context.replica import ContextReplica
from messages.context import (
    ContextChange, ContextFilter, ContextItems, ContextSubscribed, SubscribeContext,
    UnsubscribeContext,
)
from messages.errors import GrymError
from messages.system import ErrorReply
from runtime.logs import host_logger

from .background import Background
from .connection import State

if TYPE_CHECKING:
    from .direct import RouteReplica, Target
    from .system import ServiceSystem
    from messages.task import Task

log = host_logger()
SUBSCRIBE_S = 2.0
POLL_S = 0.05


class ContextFeed(Background):
    def __init__(self, system: "ServiceSystem", routes: "RouteReplica"):
        self._system, self._routes = system, routes
        self._lock = threading.Lock()
        self.replica = ContextReplica()
        self._start("grym-context-copy")

    # -- what the direct path asks ------------------------------------------------------
    def for_task(self, target: "Target", task: "Task") -> tuple[dict | None, float] | None:
        """(the context for ``task``, or None to run it without, as the router does when
        the adapter refuses the stored values; ms spent), or None: ask the router."""
        started = time.perf_counter()
        try:
            with self._lock:
                found = self.replica.model_context(target.kind, task.id)
        except GrymError as exc:
            log.warning("context_fetch_failed", task_id=task.id, error=str(exc))
            return None, (time.perf_counter() - started) * 1000
        if found is None:
            return None
        return found[0], (time.perf_counter() - started) * 1000

    def written(self, seq: int) -> None:
        """This host's own write, acknowledged at ``seq``: its next tasks see it."""
        with self._lock:
            self.replica.written(seq)

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        conn = self._system._conn
        while not self._stop.is_set() and conn.state is not State.CLOSED:
            context = self._routes.context if self._routes.ready else None
            if context is None:
                self._stop.wait(POLL_S)
                continue
            try:
                epoch, _ = conn.wait_connected(time.monotonic() + 0.5, "SubscribeContext")
                with self._system.open_endpoint() as endpoint:
                    self._follow(endpoint, epoch, context)
            except Exception as exc:  # noqa: BLE001 - a transport in a bad way: again
                log.debug("context_copy_error", error=f"{type(exc).__name__}: {exc}")
            with self._lock:
                self.replica.reset()
            self._stop.wait(POLL_S)

    def _follow(self, endpoint: Any, epoch: int, context: Any) -> None:
        conn = self._system._conn
        reply = endpoint.ask(context, SubscribeContext(ContextFilter()), SUBSCRIBE_S)
        if not isinstance(reply, ContextSubscribed):
            return
        with self._lock:
            request = self.replica.start(reply)
        try:
            while not self._stop.is_set() and conn.epoch == epoch \
                    and self._routes.context == context:
                if request is not None:
                    endpoint.tell(context, request)
                    request = None
                msg = endpoint.listen(POLL_S)
                with self._lock:
                    if isinstance(msg, ContextChange) and msg.subscription_id == reply.subscription_id:
                        request = self.replica.on_change(msg)
                    elif isinstance(msg, ContextItems):
                        request = self.replica.on_page(msg)
                    elif isinstance(msg, ErrorReply) and self.replica.seq is None:
                        request = self.replica.read_again()  # a page refused (overloaded)
        finally:
            if conn.epoch == epoch and conn.state is State.CONNECTED:
                endpoint.tell(context, UnsubscribeContext(reply.subscription_id))
