"""Results as JSON: numpy arrays as lists, or (``arrays=base64``) as compact float32.

    {"dtype": "float32", "shape": [2, 768], "base64": "..."}   # little-endian bytes

Bytes become ``{"base64": ..., "bytes": n}``; NaN and infinities, which JSON
cannot spell, become null.
"""
from __future__ import annotations

import base64
import dataclasses
import enum
import math
from typing import Any

import numpy as np

from messages.task import TaskResult



def plain(value: Any, arrays: str = "list") -> Any:
    """A JSON-ready copy of ``value``."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): plain(v, arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, arrays) for v in value]
    if isinstance(value, np.ndarray):
        return _array(value, arrays)
    if isinstance(value, np.generic):
        return plain(value.item(), arrays)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        return {"base64": base64.b64encode(raw).decode("ascii"), "bytes": len(raw)}
    if isinstance(value, enum.Enum):
        return plain(value.value, arrays)
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v, arrays) for v in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name), arrays) for f in dataclasses.fields(value)}
    return str(value)


def _array(value: np.ndarray, arrays: str) -> Any:
    if arrays != "base64":
        return plain(value.tolist())  # plain again: NaN inside a float array
    if value.dtype.kind == "f":
        value = value.astype("<f4", copy=False)
    elif value.dtype.kind in "iub":
        value = value.astype(value.dtype.newbyteorder("<"), copy=False)
    else:
        return plain(value.tolist())
    return {"dtype": value.dtype.name, "shape": list(value.shape),
            "base64": base64.b64encode(np.ascontiguousarray(value).tobytes()).decode("ascii")}


def result_json(result: TaskResult, arrays: str = "list") -> dict[str, Any]:
    """A completed TaskResult as the answer body (a failed one is an error body)."""
    return {"task_id": result.task_id, "status": result.status.value,
            "data": plain(result.data, arrays), "metrics": dataclasses.asdict(result.metrics)}
