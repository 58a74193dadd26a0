"""What every message shares: validation on construction and on receipt.

Pickling restores a dataclass without calling ``__init__``, so a message that
arrives from another process is validated again by the actor that receives it
(``validate()``), not only when it is built.
"""
from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Any

from .errors import InvalidInput


def require(condition: bool, field: str, problem: str) -> None:
    if not condition:
        raise InvalidInput(f"{field}: {problem}", {"field": field})


def require_text(value: Any, field: str, max_len: int = 256) -> None:
    require(isinstance(value, str) and 0 < len(value) <= max_len, field,
            f"must be a non-empty string of at most {max_len} characters, got {value!r:.80}")


def require_seconds(value: Any, field: str, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    require(isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value > 0, field,
            f"must be a positive number of seconds, got {value!r:.80}")


@dataclass(frozen=True)
class Message:
    """Base of all project messages; subclasses override ``validate``."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise InvalidInput naming the field when the message is malformed."""

    def __str__(self) -> str:
        """A short summary. Thespian formats every message it sends for a debug log,
        whether or not that log is on: the full repr of 10 s of audio costs more
        than the hop itself."""
        parts = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name, None)
            if value is None or isinstance(value, (bool, int, float, enum.Enum)) or (
                    isinstance(value, str) and len(value) <= 64):
                parts.append(f"{f.name}={value!r}")
            else:
                size = f" of {len(value)}" if hasattr(value, "__len__") else ""
                parts.append(f"{f.name}=<{type(value).__name__}{size}>")
        return f"{type(self).__name__}({', '.join(parts)})"
