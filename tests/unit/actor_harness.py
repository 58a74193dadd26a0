"""One actor shell in this process, without an actor system.

``harness(cls)`` builds the actor with Thespian's ``send`` and ``wakeupAfter``
replaced by recorders, so a test hands it messages through the real
``receiveMessage`` (typed dispatch, validation, error answers) and reads what
it sent. Timers fire only when the test says so, and a ``Clock`` stands in for
``time`` in the actor's module, so a deadline test needs no sleeping.
"""
from __future__ import annotations

import select
from typing import Any

from thespian.actors import WakeupMessage, WatchMessage

from messages.errors import ErrorInfo
from messages.service import ServiceTaskDone
from messages.system import ErrorReply
from messages.task import TaskResult


class Clock:
    """Stands in for the ``time`` module an actor module imports."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def harness(actor_cls: type) -> Any:
    class Recorded(actor_cls):
        def __init__(self) -> None:
            super().__init__()
            self.sent: list[tuple[Any, Any]] = []      # (to, message), in order
            self.timers: list[tuple[float, Any]] = []  # (delay, payload), not yet fired

        def send(self, to: Any, msg: Any) -> None:
            self.sent.append((to, msg))

        def wakeupAfter(self, delay: Any, payload: Any = None) -> None:
            self.timers.append((delay, payload))

        def notifyOnSystemRegistrationChanges(self, startHandling: bool = True) -> None:
            self.convention_notices = startHandling  # the admin would send them

    Recorded.__name__ = actor_cls.__name__
    return Recorded()


def deliver(actor: Any, msg: Any, sender: Any) -> list[tuple[Any, Any]]:
    """Hand ``msg`` to the actor; what it sent in answer, as (to, message) pairs."""
    before = len(actor.sent)
    actor.receiveMessage(msg, sender)
    return actor.sent[before:]


def fire_timers(actor: Any) -> list[tuple[Any, Any]]:
    """Fire every timer set so far (as Thespian would once its delay passed)."""
    timers, actor.timers = actor.timers, []
    out = []
    for delay, payload in timers:
        out += deliver(actor, WakeupMessage(delay, payload), "thespian")
    return out


def to(sent: list[tuple[Any, Any]], who: Any) -> list[Any]:
    """The messages in ``sent`` addressed to ``who``."""
    return [msg for addr, msg in sent if addr == who]


def errors(sent: list[tuple[Any, Any]]) -> list[ErrorInfo]:
    """The errors the actor answered with: in ErrorReplies, failed TaskResults, ServiceTaskDones."""
    found = []
    for _, msg in sent:
        if isinstance(msg, ServiceTaskDone):
            msg = msg.result
        if isinstance(msg, (ErrorReply, TaskResult)) and msg.error is not None:
            found.append(msg.error)
    return found


def wait_for_worker(actor: Any, timeout_s: float = 5.0) -> list[tuple[Any, Any]]:
    """Wait until the service actor's worker thread signals a finished job, then
    hand the actor the WatchMessage Thespian would send; what it sent in answer."""
    ready, _, _ = select.select([actor.worker.read_fd], [], [], timeout_s)
    assert ready, f"the worker finished nothing within {timeout_s} s"
    return deliver(actor, WatchMessage(ready), "thespian")
