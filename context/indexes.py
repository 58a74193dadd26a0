"""Secondary indexes, so a query examines what it might return, not the whole store."""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from messages.context import ContextFilter

from .records import Record


class Indexes:
    """Item ids by type, source, task, workflow and tag."""

    def __init__(self) -> None:
        self._by: dict[str, defaultdict[str, set[str]]] = {
            name: defaultdict(set) for name in ("type", "source", "task_id", "workflow_id", "tag")}

    def add(self, record: Record) -> None:
        for name, key in self._keys(record):
            self._by[name][key].add(record.id)

    def remove(self, record: Record) -> None:
        for name, key in self._keys(record):
            ids = self._by[name][key]
            ids.discard(record.id)
            if not ids:  # drop empty buckets so old task ids do not pile up
                del self._by[name][key]

    def candidates(self, f: ContextFilter) -> Iterable[str] | None:
        """Ids that may match ``f``, taken from its most selective indexed
        criterion; None when ``f`` has none, meaning every item is a candidate.
        The caller still checks every criterion."""
        options = []
        if f.types is not None:
            options.append(self._union("type", f.types))
        if f.sources is not None:
            options.append(self._union("source", f.sources))
        if f.task_id is not None:
            options.append(self._union("task_id", (f.task_id,)))
        if f.workflow_id is not None:
            options.append(self._union("workflow_id", (f.workflow_id,)))
        if f.tags is not None:
            if f.tags_mode == "all":
                options.extend(self._union("tag", (tag,)) for tag in f.tags)
            else:
                options.append(self._union("tag", f.tags))
        if not options:
            return None
        buckets = min(options, key=lambda sets: sum(map(len, sets)))
        return buckets[0] if len(buckets) == 1 else {i for ids in buckets for i in ids}

    def _union(self, name: str, keys: Iterable[str]) -> list[set[str]]:
        index = self._by[name]
        return [index[key] for key in keys if key in index] or [set()]

    @staticmethod
    def _keys(record: Record) -> Iterable[tuple[str, str]]:
        yield "type", record.type
        yield "source", record.source
        if record.task_id is not None:
            yield "task_id", record.task_id
        if record.workflow_id is not None:
            yield "workflow_id", record.workflow_id
        for tag in record.tags:
            yield "tag", tag
