"""The ContextActor: sole owner of the context repository (temporary minimal shell)."""
from __future__ import annotations

from typing import Any

from thespian.actors import Actor

from messages.context import GetContextForModel, ModelContext, StoreContext, ContextAck
from messages.system import ContextSetup

from .base import GrymActor


class ContextActor(GrymActor, Actor):
    handlers = {ContextSetup: "on_setup", GetContextForModel: "on_model", StoreContext: "on_store"}

    def on_setup(self, msg, sender):
        pass

    def on_model(self, msg, sender):
        self.send(sender, ModelContext(msg.model_type, {}, (), ref=msg.ref))

    def on_store(self, msg, sender):
        self.send(sender, ContextAck("x", 1, 1))
