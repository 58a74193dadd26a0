"""A program of someone else's that joins a running runtime with its own Thespian actor.

Run as ``python -m tests.integration.external_client PORT SECRET_FILE``; prints one JSON
line. It joins with the runtime's key (``frames.use_secret_file``): without it, the
runtime's processes refuse every frame it sends.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from thespian.actors import Actor, ActorExitRequest, ActorSystem, ActorSystemMessage

from messages import Task, TaskResult
from messages.context import ContextAck, ContextItem, StoreContext
from messages.system import SUPERVISOR_CLASS, SUPERVISOR_GLOBAL_NAME, GetSystemInfo
from runtime import frames
from runtime.network import restrict_bind


class Client(Actor):
    """Sends two tasks and a context write, and reports what came back."""

    def receiveMessage(self, msg: Any, sender: Any) -> None:
        if isinstance(msg, ActorSystemMessage):
            return
        if isinstance(msg, dict) and "router" in msg:
            self.asker, self.got = sender, {"results": [], "acks": []}
            self.send(msg["router"], Task(id="ext-1", type="echo", data={"from": "outside"}))
            self.send(msg["router"], Task(id="ext-2", type="no-such-type"))
            self.send(msg["context"], StoreContext(ContextItem(type="prompt", source="external",
                                                               content={"text": "hello"})))
        elif isinstance(msg, TaskResult):
            self.got["results"].append({"task_id": msg.task_id, "ok": msg.ok, "data": msg.data,
                                        "code": msg.error.code.value if msg.error else None})
        elif isinstance(msg, ContextAck):
            self.got["acks"].append(msg.item_id)
        if len(self.got["results"]) == 2 and self.got["acks"]:
            self.send(self.asker, self.got)


def main(port: int, secret_file: str) -> None:
    restrict_bind("127.0.0.1")
    frames.use_secret_file(secret_file)
    asys = ActorSystem("multiprocTCPBase", {"Admin Port": port}, transientUnique=True)
    supervisor = asys.createActor(SUPERVISOR_CLASS, globalName=SUPERVISOR_GLOBAL_NAME)  # the running one
    info = asys.ask(supervisor, GetSystemInfo(), 10)
    # By name: run as __main__, this module's classes are not importable as such.
    client = asys.createActor("tests.integration.external_client.Client")
    got = asys.ask(client, {"router": info.router, "context": info.context}, 10)
    asys.tell(client, ActorExitRequest())
    print(json.dumps(got))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
