"""The thin shell every project actor shares.

Thespian calls ``receiveMessage`` again with a copy of any message whose
handler raised, then answers the sender with a PoisonMessage: a failing
inference would run twice. So nothing escapes here: a handler's GrymError is
answered with its typed error, anything else with EXECUTION_ERROR, and the
actor keeps running. Messages are dispatched by type (never compared by
value: ``msg == "x"`` raises on a numpy array) and validated again on
receipt, since unpickling does not run their checks.
"""
from __future__ import annotations

import os
from typing import Any, Callable

import structlog
from thespian.actors import (
    ActorExitRequest, ActorSystemMessage, ChildActorExited, PoisonMessage, WakeupMessage,
)

from messages.base import Message
from messages.service import Heartbeat, HeartbeatAck
from messages.errors import ErrorCode, ErrorInfo, GrymError, InvalidInput, Overloaded
from messages.system import ErrorReply
from messages.task import Task, TaskResult


Handler = Callable[[Any, Any], Any]
_COMMON_HANDLERS = {Heartbeat: "on_basic_heartbeat"}
MAX_EARLY_MESSAGES = 1024


def error_info(exc: BaseException) -> ErrorInfo:
    if isinstance(exc, GrymError):
        return exc.info()
    return ErrorInfo(ErrorCode.EXECUTION_ERROR, f"{type(exc).__name__}: {exc}")


def error_answer(msg: Any, info: ErrorInfo) -> Any:
    """A failed TaskResult for anything that carried a task, an ErrorReply otherwise."""
    task = msg if isinstance(msg, Task) else getattr(msg, "task", None)
    if isinstance(task, Task) and isinstance(getattr(task, "id", None), str):
        return TaskResult.failure(task.id, info)
    return ErrorReply(info, ref=getattr(msg, "ref", None))


class GrymActor:
    """Mixin for a Thespian ``Actor``: typed dispatch, validation, no escaping exceptions.

    Subclasses fill ``handlers`` (message type -> method name). Thespian's own
    messages without a handler are ignored; any other unknown message is
    answered with INVALID_INPUT.
    """

    handlers: dict[type, str] = {}
    log = structlog.get_logger()

    def receiveMessage(self, msg: Any, sender: Any) -> Any:
        handler = self._handler_for(msg)
        try:
            if handler is None:
                if not isinstance(msg, ActorSystemMessage):
                    raise InvalidInput(f"{type(msg).__name__} is not a message this actor takes",
                                       {"message_type": type(msg).__name__})
                return self.idle_result()
            if isinstance(msg, Message):
                msg.validate()
            handler(msg, sender)
        except Exception as exc:  # noqa: BLE001 - see the module docstring
            if not isinstance(exc, GrymError):
                self.log.exception("handler_failed", actor=type(self).__name__,
                                   message_type=type(msg).__name__)
            if not isinstance(msg, ActorSystemMessage):
                try:
                    self.send(sender, self.error_answer(msg, error_info(exc)))
                except Exception:  # noqa: BLE001 - the sender may be gone
                    self.log.warning("error_reply_failed", message_type=type(msg).__name__)
        return self.idle_result()

    # -- messages that overtook the set-up message -------------------------------
    # Messages from different senders (and, under the spawn start method, from the
    # same one before the actor runs) can arrive before the message that sets the
    # actor up. Subclasses say when they are set up; work before that is held.
    def is_set_up(self) -> bool:
        return True

    def hold_until_set_up(self, msg: Any, sender: Any) -> bool:
        """True when ``msg`` was held for later; refuses at once past a bound."""
        if self.is_set_up():
            return False
        early = self.__dict__.setdefault("_early", [])
        if len(early) >= MAX_EARLY_MESSAGES:
            raise Overloaded(f"{type(self).__name__} is still starting and holds "
                             f"{MAX_EARLY_MESSAGES} early messages")
        early.append((msg, sender))
        return True

    def release_held(self) -> None:
        """Handle, in arrival order, what was held before the set-up."""
        early, self._early = self.__dict__.get("_early", []), []
        for message, sender in early:
            self.receiveMessage(message, sender)

    def error_answer(self, msg: Any, info: ErrorInfo) -> Any:
        """The typed answer to a request that failed; see ``error_answer`` below."""
        return error_answer(msg, info)

    def _handler_for(self, msg: Any) -> Handler | None:
        for cls in type(msg).__mro__:
            name = self.handlers.get(cls) or _COMMON_HANDLERS.get(cls)
            if name is not None:
                return getattr(self, name)
        return None

    def on_basic_heartbeat(self, msg: Heartbeat, sender: Any) -> None:
        """Every actor's answer to its supervisor's heartbeat: alive, with its pid (so
        that a hung one can be killed) and whatever ``heartbeat_facts`` adds."""
        self.send(sender, HeartbeatAck(seq=msg.seq, pid=os.getpid(), **self.heartbeat_facts()))

    def heartbeat_facts(self) -> dict[str, Any]:
        """HeartbeatAck fields beyond seq and pid; an actor with a model adds its load."""
        return {"name": type(self).__name__}

    def idle_result(self) -> Any:
        """What receiveMessage returns; the service actor returns a ThespianWatch."""
        return None


# Thespian's own messages, re-exported so actor modules import them from one place.
__all__ = ["GrymActor", "error_info", "error_answer", "ActorExitRequest", "ChildActorExited",
           "PoisonMessage", "WakeupMessage"]
