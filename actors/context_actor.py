"""The ContextActor: the only owner of the context repository.

Every read and write is a message handled one at a time, so no two services
ever touch the store at once. The repository logic lives in
``context.manager.ContextManager``; this shell turns messages into calls on
it, sends the replies, delivers subscribers' changes, and runs the expiry
sweep on a timer. When the supervisor restarts this actor, it reopens the
same store: with SQLite persistence every acknowledged write is still there.
Subscriptions are not persisted: a subscriber that notices the restart
subscribes again with ``since_seq`` to get what it missed (the host API does).
A write's idempotency key is stored with it, in the same transaction, so a
write retried after this actor died before acknowledging it applies once.
"""
from __future__ import annotations

import os
import signal
from typing import Any

from thespian.actors import Actor, ActorExitRequest, WakeupMessage

from context.manager import ContextManager
from messages.context import (
    DeleteContext, GetContextForModel, GetContextStats, QueryContext, RetrieveContext,
    StoreContext, SubscribeContext, UnsubscribeContext, UpdateContext,
)
from messages.errors import InitError
from messages.system import ContextSetup

from .base import GrymActor

# Test-only fault hook (the chaos tests set it in the runtime's environment): the
# context actor kills itself after applying the write that carries this idempotency
# key, before acknowledging it. Unset in any real deployment.
TEST_KILL_AFTER_WRITE_ENV = "GRYM_TEST_KILL_CONTEXT_AFTER_WRITE"


class ContextActor(GrymActor, Actor):
    handlers = {
        ContextSetup: "on_setup", StoreContext: "on_request", RetrieveContext: "on_request",
        QueryContext: "on_request", UpdateContext: "on_request", DeleteContext: "on_request",
        GetContextForModel: "on_request", GetContextStats: "on_request",
        SubscribeContext: "on_subscribe", UnsubscribeContext: "on_unsubscribe",
        WakeupMessage: "on_sweep", ActorExitRequest: "on_exit",
    }

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.manager: ContextManager | None = None
        self.subscribers: dict[str, Any] = {}  # subscription id -> address

    def on_setup(self, msg: ContextSetup, sender: Any) -> None:
        if self.manager is not None:
            return
        self.manager = ContextManager.from_config(msg.settings)
        self.wakeupAfter(self.manager.settings.sweep_interval_s, payload="sweep")
        self.log.info("context_ready", persistence=self.manager.settings.persistence,
                      items=self.manager.stats().items)
        self.release_held()

    def is_set_up(self) -> bool:
        return self.manager is not None

    def on_request(self, msg: Any, sender: Any) -> None:
        if self.hold_until_set_up(msg, sender):
            return
        seq = self._manager().seq
        reply = self._call(msg)
        if self.manager.seq != seq:  # applied a change (not a read, nor a recalled write)
            self._test_fault(msg)
        self.send(sender, reply)
        self._deliver_changes()

    def _call(self, msg: Any) -> Any:
        m = self._manager()
        if isinstance(msg, StoreContext):
            return m.store(msg.item, msg.idempotency_key)
        if isinstance(msg, RetrieveContext):
            return m.retrieve(msg.item_id)
        if isinstance(msg, QueryContext):
            return m.query(msg.filter)
        if isinstance(msg, UpdateContext):
            return m.update(msg.item_id, msg.changes, msg.expected_version, msg.idempotency_key)
        if isinstance(msg, DeleteContext):
            return m.delete(msg.item_id, msg.idempotency_key)
        if isinstance(msg, GetContextForModel):
            return m.get_context_for_model(msg.model_type, msg.task_id, msg.priority, msg.filter,
                                           ref=msg.ref)
        return m.stats()  # GetContextStats

    @staticmethod
    def _test_fault(msg: Any) -> None:
        key = getattr(msg, "idempotency_key", None)
        if key is not None and key == os.environ.get(TEST_KILL_AFTER_WRITE_ENV):
            os.kill(os.getpid(), signal.SIGKILL)

    def on_subscribe(self, msg: SubscribeContext, sender: Any) -> None:
        reply = self._manager().subscribe(msg.filter, msg.since_seq)
        self.subscribers[reply.subscription_id] = sender
        self.send(sender, reply)
        self._deliver_changes()

    def on_unsubscribe(self, msg: UnsubscribeContext, sender: Any) -> None:
        reply = self._manager().unsubscribe(msg.subscription_id)
        self.subscribers.pop(msg.subscription_id, None)
        self.send(sender, reply)

    def on_sweep(self, msg: WakeupMessage, sender: Any) -> None:
        if self.manager is None:
            return
        removed = self.manager.sweep()
        if removed:
            self.log.debug("context_swept", removed=removed)
        self._deliver_changes()
        self.wakeupAfter(self.manager.settings.sweep_interval_s, payload="sweep")

    def _deliver_changes(self) -> None:
        for subscription_id, change in self.manager.take_changes():
            address = self.subscribers.get(subscription_id)
            if address is not None:
                self.send(address, change)

    def on_exit(self, msg: ActorExitRequest, sender: Any) -> None:
        if self.manager is not None:
            self.manager.close()

    def _manager(self) -> ContextManager:
        if self.manager is None:
            raise InitError("the context actor has not been set up by its supervisor yet")
        return self.manager
