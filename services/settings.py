"""Turning a config table into a validated settings dataclass.

Every error names the key, so a person can find it in the file: unknown keys
are refused (a typo must not silently fall back to a default).
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping, TypeVar

from messages.errors import ConfigError

T = TypeVar("T")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 10**3, "KB": 10**3, "KIB": 2**10, "M": 10**6, "MB": 10**6,
          "MIB": 2**20, "G": 10**9, "GB": 10**9, "GIB": 2**30, "T": 10**12, "TB": 10**12,
          "TIB": 2**40}


def parse_size(value: Any, key: str) -> int:
    """'1.5GB' -> 1500000000, '512MiB' -> 536870912, 2048 -> 2048. Refuses <= 0."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a size such as '2GB', got {value!r}", {"key": key})
    if isinstance(value, (int, float)):
        number, unit = float(value), ""
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        number, unit = float(m.group(1)), m.group(2).upper()
    else:
        raise ConfigError(f"{key}: expected a size such as '2GB' or '512MiB', got {value!r}",
                          {"key": key})
    if unit not in _UNITS or not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{key}: expected a positive size such as '2GB', got {value!r}",
                          {"key": key})
    return int(number * _UNITS[unit])


def build_settings(cls: type[T], data: Mapping[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``data``; errors name ``where.key``.

    The dataclass checks its own values in ``__post_init__`` by raising
    ``ConfigError``/``ValueError`` whose message starts with the field name.
    """
    data = dict(data or {})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key (known: {', '.join(sorted(names))})",
                          {"key": f"{where}.{unknown[0]}"})
    try:
        return cls(**data)
    except ConfigError as exc:
        key = exc.details.get("key", "")
        raise ConfigError(f"{where}.{exc.message}", {"key": f"{where}.{key}"}) from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}", {"key": where}) from None


def check(condition: bool, key: str, problem: str) -> None:
    """Used by settings dataclasses: ``check(x > 0, "max_queue", "must be positive")``."""
    if not condition:
        raise ConfigError(f"{key}: {problem}", {"key": key})


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
