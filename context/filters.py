"""Does an item match a filter, and in what order do matches come.

Works on anything with the item's attribute names: a ContextItem, or a
stored Record whose ``content`` is decoded only when a content criterion asks.
"""
from __future__ import annotations

from typing import Any, Callable

from messages.context import ContextFilter, Order

_MISSING = object()


def content_at(content: Any, path: str) -> Any:
    """The value at a dotted path (numeric segments index lists), or _MISSING."""
    value = content
    for segment in path.split("."):
        if isinstance(value, dict):
            value = value.get(segment, _MISSING)
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            return _MISSING
        if value is _MISSING:
            return _MISSING
    return value


def json_equal(a: Any, b: Any) -> bool:
    """Equality as JSON sees it: true is not 1, and 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return a == b


def matches(f: ContextFilter, item: Any) -> bool:
    """Whether ``item`` meets every criterion of ``f`` (paging aside)."""
    if f.types is not None and item.type not in f.types:
        return False
    if f.sources is not None and item.source not in f.sources:
        return False
    if f.task_id is not None and item.task_id != f.task_id:
        return False
    if f.workflow_id is not None and item.workflow_id != f.workflow_id:
        return False
    if f.min_priority is not None and item.priority < f.min_priority:
        return False
    if f.tags is not None:
        wanted = f.tags <= item.tags if f.tags_mode == "all" else not f.tags.isdisjoint(item.tags)
        if not wanted:
            return False
    if not _within(item.created_at, f.created_since, f.created_before):
        return False
    if not _within(item.updated_at, f.updated_since, f.updated_before):
        return False
    if f.content:
        content = item.content
        return all(json_equal(content_at(content, path), value) for path, value in f.content.items())
    return True


def _within(value: float, since: float | None, before: float | None) -> bool:
    return (since is None or value >= since) and (before is None or value < before)


def sort_key(order: Order) -> Callable[[Any], Any]:
    """Key for ``sorted``: versions are unique, so every order is total."""
    if order is Order.OLDEST:
        return lambda item: item.version
    if order is Order.PRIORITY:
        return lambda item: (-item.priority, -item.version)
    return lambda item: -item.version
