"""Best-effort messages from the host to the runtime's actors, sent by a thread of
their own: the direct tasks' counts for the router and their history for the context
actor.

Why a thread: Thespian's ``tell`` returns only when every transmit pending on its
endpoint is done, and a transmit to an actor that was just killed is retried for
about 35 s (``TRANSMIT_RETRY_PERIOD``). A caller's endpoint can hold such a transmit
(its task went to a service killed under it), so a tell there held the caller past
its deadline (chaos test, service killed under load: 34.5 s); on the route feed's
endpoint it would hold the routes. Here it holds only these counts: the queue is
bounded, and what does not fit, or belongs to a start of the runtime that went
away, is dropped and counted.
"""
from __future__ import annotations

import queue
from typing import TYPE_CHECKING, Any

from runtime.logs import host_logger

from .background import Background
from .connection import State

if TYPE_CHECKING:
    from .system import ServiceSystem

log = host_logger()
CAPACITY = 4096     # messages waiting; past it new ones are dropped (and counted)
IDLE_S = 0.1        # how long the thread waits for a message before it reads replies


class Outbox(Background):
    def __init__(self, system: "ServiceSystem"):
        self._system = system
        self._queue: queue.Queue[tuple[int, Any, Any]] = queue.Queue(CAPACITY)
        self.sent = 0
        self.dropped = 0
        self._start("grym-outbox")

    def put(self, epoch: int, address: Any, message: Any) -> None:
        """Queue ``message`` for the actor at ``address`` of the runtime's start
        ``epoch``; never waits."""
        if address is None:
            return
        try:
            self._queue.put_nowait((epoch, address, message))
        except queue.Full:
            self.dropped += 1
            log.debug("outbox_full", dropped=type(message).__name__)

    def _run(self) -> None:
        conn, endpoint = self._system._conn, None
        while conn.state is not State.CLOSED:
            try:
                epoch, address, message = self._queue.get(timeout=IDLE_S)
            except queue.Empty:
                if self._stop.is_set():
                    return
                self._read_replies(endpoint)
                continue
            if epoch != conn.epoch or conn.state is not State.CONNECTED:
                self.dropped += 1  # its actor is of a start of the runtime that went away
                continue
            try:
                endpoint = self._system._endpoint(epoch)  # this thread's, one per start
                endpoint.tell(address, message)
                self.sent += 1
            except Exception as exc:  # noqa: BLE001 - best effort: counts and history
                self.dropped += 1
                log.debug("outbox_not_sent", message=type(message).__name__,
                          error=f"{type(exc).__name__}: {exc}")
            self._read_replies(endpoint)

    @staticmethod
    def _read_replies(endpoint: Any) -> None:
        """Read and drop what comes back (the context actor's ContextAck): an endpoint
        nobody reads would hold its sender's transmits."""
        if endpoint is None:
            return
        try:
            while endpoint.listen(0.001) is not None:
                pass
        except Exception as exc:  # noqa: BLE001 - the endpoint's transport went away
            log.debug("outbox_read_failed", error=f"{type(exc).__name__}: {exc}")
