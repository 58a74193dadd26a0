"""What every message shares: validation on construction and on receipt.

Pickling restores a dataclass without calling ``__init__``, so a message that
arrives from another process is validated again by the actor that receives it
(``validate()``), not only when it is built. The checks are in ``validation``.
"""
from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass


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
