"""How the context store is configured (the ``[context]`` table)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from messages.errors import ConfigError
from messages.validation import build_settings, check, is_int, parse_size, require_seconds


@dataclass(frozen=True)
class ContextSettings:
    """Limits, lifetimes and persistence of shared context.

    ``max_bytes`` and ``compress_threshold_bytes`` accept sizes such as
    ``"256MB"``.  ``synchronous="FULL"`` makes SQLite commits survive power
    loss; ``"NORMAL"`` (WAL) survives a crashed process, which is what the
    runtime's supervision covers.
    """

    default_ttl_s: float = 3600.0
    max_items: int = 100_000
    max_bytes: int | str = "256MB"
    sliding_ttl: bool = False
    persistence: str = "memory"
    path: str | None = None
    synchronous: str = "NORMAL"
    compress_threshold_bytes: int | str = 4096
    sweep_interval_s: float = 5.0
    sweep_batch: int = 1000
    change_log_size: int = 1024
    # How long, and how many, write idempotency keys are kept (each with its ContextAck),
    # so that a write retried after a lost acknowledgement applies once.
    idempotency_ttl_s: float = 600.0
    idempotency_keys: int = 100_000

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_bytes", parse_size(self.max_bytes, "max_bytes"))
        object.__setattr__(self, "compress_threshold_bytes",
                           parse_size(self.compress_threshold_bytes, "compress_threshold_bytes"))
        for key in ("default_ttl_s", "sweep_interval_s", "idempotency_ttl_s"):
            value = getattr(self, key)
            require_seconds(value, key, allow_none=False, error=ConfigError)
        for key in ("max_items", "sweep_batch", "change_log_size", "idempotency_keys"):
            value = getattr(self, key)
            check(is_int(value) and value > 0, key,
                  f"must be a positive integer, got {value!r}")
        check(isinstance(self.sliding_ttl, bool), "sliding_ttl", f"must be true or false, got {self.sliding_ttl!r}")
        check(self.persistence in ("memory", "sqlite"), "persistence",
              f"must be 'memory' or 'sqlite', got {self.persistence!r}")
        check(self.persistence != "sqlite" or (isinstance(self.path, str) and self.path != ""), "path",
              "is required when persistence is 'sqlite'")
        check(self.path is None or isinstance(self.path, str), "path", "must be a string")
        check(isinstance(self.synchronous, str) and self.synchronous.upper() in ("NORMAL", "FULL"),
              "synchronous", f"must be 'NORMAL' or 'FULL', got {self.synchronous!r}")
        object.__setattr__(self, "synchronous", self.synchronous.upper())

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None, where: str = "context") -> "ContextSettings":
        """Build from a config table; errors name ``where.key``."""
        return build_settings(cls, data, where)
