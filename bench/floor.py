"""The Thespian floor, measured beside the runtime in the same actor system:
a bare ask (caller -> actor -> caller) and a two-hop chain (caller -> actor ->
actor -> caller)."""
from __future__ import annotations

from typing import Any

from thespian.actors import Actor


class Ping(Actor):
    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, tuple) and len(msg) == 2 and msg[0] == "reply-to":
            self.send(msg[1][0], msg[1][1])  # second hop: answer the original caller
        elif not isinstance(msg, (tuple,)) and not _is_system(msg):
            self.send(sender, msg)


class Forward(Actor):
    """First hop: hand the message and the caller's address to ``Ping``."""

    target = None

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, tuple) and len(msg) == 2 and msg[0] == "target":
            self.target = msg[1]
            self.send(sender, "ok")
        elif self.target is not None and not _is_system(msg):
            self.send(self.target, ("reply-to", (sender, msg)))


def _is_system(msg: Any) -> bool:
    from thespian.actors import ActorSystemMessage
    return isinstance(msg, ActorSystemMessage)


def floor_actors(asys: Any) -> tuple[Any, Any]:
    """(ping, forward) created in ``asys``; ask ping for one hop, forward for two."""
    ping = asys.createActor(Ping)
    forward = asys.createActor(Forward)
    assert asys.ask(forward, ("target", ping), 5) == "ok"
    return ping, forward
