"""What the ContextActor calls: one method per request, returning the reply message.

Methods raise GrymError subclasses (NotFound, InvalidInput, Conflict,
Overloaded, ExecutionError) for the actor to answer with their ErrorInfo.
Changes for subscribers pile up in an outbox: after each request (and each
``sweep``) the actor takes them with ``take_changes()`` and sends each
ContextChange to the subscriber its subscription id belongs to.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Mapping

from messages.context import (
    ContextAck, ContextChange, ContextFilter, ContextItem, ContextItemReply, ContextItems,
    ContextStats, ContextSubscribed, ContextUnsubscribed, ModelContext, priority_value,
)

from .adapters import ContextAdapter, PassThroughAdapter, discover_adapters
from .backends import Backend, open_backend
from .repository import Change, Clock, Repository
from .settings import ContextSettings
from .subscriptions import Delivery, Subscriptions


class ContextManager:
    """Shared context for model services: store, query, adapt, and watch.

    ``clock`` returns wall-clock seconds (expiry times persist across
    restarts); tests pass a fake one.  ``backend`` defaults to the one the
    settings name; ``adapters`` maps model types to adapter factories and
    defaults to the built-ins plus the ``grym.context_adapters`` entry points.
    """

    def __init__(self, settings: ContextSettings | None = None, *, clock: Clock = time.time,
                 backend: Backend | None = None,
                 adapters: Mapping[str, Callable[[], ContextAdapter]] | None = None):
        self.settings = settings or ContextSettings()
        self._outbox: list[Delivery] = []
        self._repository = Repository(backend or open_backend(self.settings), self.settings, clock,
                                      listener=self._publish)
        self._subscriptions = Subscriptions(self.settings.change_log_size, self._repository.seq)
        self._adapter_factories = dict(discover_adapters() if adapters is None else adapters)
        self._adapters: dict[str, ContextAdapter] = {}

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None, *, clock: Clock = time.time) -> "ContextManager":
        """From a ``[context]`` config table; ConfigError names a bad key."""
        return cls(ContextSettings.from_config(data), clock=clock)

    # ---- items ---------------------------------------------------------------

    def store(self, item: ContextItem, idempotency_key: str | None = None) -> ContextAck:
        """Store or replace ``item``.  Raises Overloaded if only critical items could make room.

        Writes with an ``idempotency_key`` that was applied already are answered with
        that write's ContextAck and not applied again (Conflict: the key was used
        for another operation or item)."""
        return self._recalled(idempotency_key, "store", item.id) or \
            _ack(self._repository.store(item, idempotency_key))

    def retrieve(self, item_id: str) -> ContextItemReply:
        """Raises NotFound for an unknown or expired id."""
        return ContextItemReply(self._repository.retrieve(item_id))

    def query(self, f: ContextFilter) -> ContextItems:
        items, total = self._repository.query(f)
        return ContextItems(tuple(items), total)

    def update(self, item_id: str, changes: Mapping[str, Any],
               expected_version: int | None = None,
               idempotency_key: str | None = None) -> ContextAck:
        """Raises NotFound, Conflict (stale ``expected_version``), InvalidInput or Overloaded."""
        return self._recalled(idempotency_key, "update", item_id) or _ack(
            self._repository.update(item_id, changes, expected_version, idempotency_key))

    def delete(self, item_id: str, idempotency_key: str | None = None) -> ContextAck:
        """Raises NotFound for an unknown or expired id."""
        return self._recalled(idempotency_key, "delete", item_id) or \
            _ack(self._repository.delete(item_id, idempotency_key))

    def _recalled(self, key: str | None, op: str, item_id: str | None) -> ContextAck | None:
        done = None if key is None else self._repository.recall(key, op, item_id)
        return None if done is None else ContextAck(done.item_id, done.version, done.seq)

    # ---- models ----------------------------------------------------------------

    def get_context_for_model(self, model_type: str, task_id: str | None = None,
                              priority: int | str | None = None,
                              filter: ContextFilter | None = None, ref: Any = None) -> ModelContext:
        """The newest items (up to the filter's limit) the model's adapter reads,
        at least ``priority`` if given, shaped by the adapter. With ``task_id``:
        that task's items and the items tied to no task, the task's winning.
        ``ref`` (the request's) is echoed in the reply.

        Unknown model types get a pass-through of every type.  Raises
        InvalidInput when stored values do not suit the model.
        """
        adapter = self._adapter(model_type)
        f = filter or ContextFilter()
        types = adapter.item_types if f.types is None else (
            f.types if adapter.item_types is None else f.types & adapter.item_types)
        items: list[ContextItem] = []
        if types is None or types:
            changes: dict[str, Any] = {"types": types, "order": "newest", "offset": 0}
            if priority is not None:
                changes["min_priority"] = max(priority_value(priority, "priority"), f.min_priority or 0)
            wanted = dataclasses.replace(f, **changes)
            if task_id is None:
                items, _ = self._repository.query(wanted)
            else:
                # The task's own items, and the shared ones (tied to no task, such
                # as a host's audio parameters); the task's own win where both
                # set a value, since they are merged last.
                own, _ = self._repository.query(dataclasses.replace(wanted, task_id=task_id))
                shared, _ = self._repository.query(wanted)
                items = own + [item for item in shared if item.task_id is None]
            items.reverse()  # adapters merge oldest write first, so the newest wins
        return ModelContext(model_type, adapter.adapt(items), tuple(item.id for item in items), ref=ref)

    def _adapter(self, model_type: str) -> ContextAdapter:
        if model_type not in self._adapters:
            factory = self._adapter_factories.get(model_type, PassThroughAdapter)
            self._adapters[model_type] = factory()
        return self._adapters[model_type]

    # ---- subscriptions ---------------------------------------------------------

    def subscribe(self, f: ContextFilter, since_seq: int | None = None) -> ContextSubscribed:
        """Start delivering matching changes; with ``since_seq``, the reply also
        carries the logged ones after it (``gap`` says if the log fell short)."""
        subscription_id, missed, gap = self._subscriptions.subscribe(f, since_seq)
        return ContextSubscribed(subscription_id, self._repository.seq, tuple(missed), gap)

    def unsubscribe(self, subscription_id: str) -> ContextUnsubscribed:
        """Raises NotFound for an unknown subscription id."""
        self._subscriptions.unsubscribe(subscription_id)
        return ContextUnsubscribed(subscription_id)

    def take_changes(self) -> list[tuple[str, ContextChange]]:
        """The (subscription id, change) pairs to deliver since the last call, in order."""
        out, self._outbox = self._outbox, []
        return out

    def _publish(self, change: Change) -> None:
        self._outbox.extend(self._subscriptions.publish(change))

    # ---- housekeeping ----------------------------------------------------------

    @property
    def seq(self) -> int:
        """The sequence number of the last change."""
        return self._repository.seq

    def sweep(self, max_items: int | None = None) -> int:
        """Remove up to ``max_items`` (default ``settings.sweep_batch``) expired
        items; the actor calls this every ``settings.sweep_interval_s``."""
        return self._repository.sweep(max_items or self.settings.sweep_batch)

    def stats(self) -> ContextStats:
        return self._repository.stats()

    def close(self) -> None:
        self._repository.close()


def _ack(change: Change) -> ContextAck:
    return ContextAck(change.record.id, change.record.version, change.seq)
