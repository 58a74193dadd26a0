"""The one family of checks that messages and config tables are built with.

A wrong message field raises InvalidInput naming the field (``details["field"]``);
a wrong config key raises ConfigError naming the key (``details["key"]``, which
``build_settings`` prefixes with the table, so a person can find it in the file).
The checkers take the error type; ``check`` is ``require`` for config.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Mapping, TypeVar

from .errors import ConfigError, GrymError, InvalidInput

T = TypeVar("T")


def is_int(value: Any) -> bool:
    """An int that is not a bool: ``True`` is an int to Python, never a count here."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def require(condition: bool, name: str, problem: str, error: type[GrymError] = InvalidInput) -> None:
    """Raise ``error("name: problem")`` unless ``condition``; its details name the field or key."""
    if not condition:
        raise error(f"{name}: {problem}", {"key" if issubclass(error, ConfigError) else "field": name})


def check(condition: bool, key: str, problem: str) -> None:
    """``require`` for settings dataclasses: ``check(x > 0, "max_queue", "must be positive")``."""
    require(condition, key, problem, ConfigError)


def require_text(value: Any, name: str, max_len: int = 256,
                 error: type[GrymError] = InvalidInput) -> None:
    require(isinstance(value, str) and 0 < len(value) <= max_len, name,
            f"must be a non-empty string of at most {max_len} characters, got {value!r:.80}", error)


def require_seconds(value: Any, name: str, allow_none: bool = True,
                    error: type[GrymError] = InvalidInput) -> None:
    if value is None and allow_none:
        return
    require(is_number(value) and value > 0, name,
            f"must be a positive number of seconds, got {value!r:.80}", error)


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
    """Build dataclass ``cls`` from config table ``data``; errors name ``where.key``.

    Unknown keys are refused (a typo must not silently fall back to a default).
    The dataclass checks its own values in ``__post_init__`` with ``check`` (or
    by raising ``ValueError`` whose message starts with the field name).
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
