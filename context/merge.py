"""JSON Merge Patch (RFC 7396): how content updates and adapter merges combine."""
from __future__ import annotations

from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """``target`` with ``patch`` applied; neither argument is modified.

    Objects merge key by key and deeply, ``None`` removes a key, and anything
    that is not an object (lists included) replaces the target whole.
    """
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged
