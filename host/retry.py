"""When a host call is sent again, and what the handle counts about it.

The model is gRPC's retry policy: only idempotent calls are retried (reads, and
context writes that carry an idempotency key, which the host API gives each
write), only on errors marked retryable (``details["retryable"]``: the part of
the runtime that was to answer went away, or is not back yet), at most
``max_attempts`` times, the n-th retry after a random wait in
[0, min(initial_backoff_s * multiplier ** (n - 1), max_backoff_s)] ("full
jitter"), and never past the call's own timeout. A retry budget (gRPC's retry
throttling: a token bucket that failures drain and successes refill) stops a
host from multiplying its load while the runtime is down. Task calls are not
retried: a task may have run before its answer was lost; its failed result
says ``retryable`` and the caller decides.
"""
from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

from messages.errors import ErrorCode, GrymError, is_retryable
from messages.validation import check, is_int, is_number


@dataclass(frozen=True)
class RetryPolicy:
    """``RetryPolicy(enabled=False)`` turns retries off; ``retry_on`` adds codes that
    are retried even unmarked (for example OVERLOADED)."""

    enabled: bool = True
    max_attempts: int = 5                 # the first attempt included
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    backoff_multiplier: float = 2.0
    reads: bool = True                    # retry idempotent reads
    writes: bool = True                   # retry context writes (each carries an idempotency key)
    retry_on: frozenset[ErrorCode] = frozenset()
    # The retry budget: retries stop while the bucket is at or below half of max_tokens;
    # each failed attempt takes 1, each success gives back token_ratio.
    max_tokens: float = 100.0
    token_ratio: float = 0.1

    def __post_init__(self) -> None:
        check(isinstance(self.enabled, bool), "enabled", "must be true or false")
        check(is_int(self.max_attempts) and self.max_attempts >= 1, "max_attempts",
              "must be an integer >= 1")
        for key in ("initial_backoff_s", "max_backoff_s", "max_tokens", "token_ratio"):
            check(is_number(getattr(self, key)) and getattr(self, key) > 0, key, "must be > 0")
        check(is_number(self.backoff_multiplier) and self.backoff_multiplier >= 1,
              "backoff_multiplier", "must be >= 1")
        object.__setattr__(self, "retry_on", frozenset(ErrorCode(c) for c in self.retry_on))

    def covers(self, kind: str) -> bool:
        """Whether calls of ``kind`` ("read" or "write") are retried at all."""
        return self.enabled and (self.reads if kind == "read" else self.writes)

    def retryable(self, error: GrymError) -> bool:
        return is_retryable(error) or error.code in self.retry_on

    def backoff_s(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """The wait before retry number ``retry`` (1 for the first)."""
        cap = min(self.initial_backoff_s * self.backoff_multiplier ** (retry - 1),
                  self.max_backoff_s)
        return rng() * cap


class RetryBudget:
    """gRPC's retry throttling, one per handle."""

    def __init__(self, policy: RetryPolicy):
        self._max, self._ratio = policy.max_tokens, policy.token_ratio
        self._tokens = policy.max_tokens
        self._lock = threading.Lock()

    def succeeded(self) -> None:
        with self._lock:
            self._tokens = min(self._max, self._tokens + self._ratio)

    def failed(self) -> None:
        with self._lock:
            self._tokens = max(0.0, self._tokens - 1)

    def allows_retry(self) -> bool:
        with self._lock:
            return self._tokens > self._max / 2


@dataclass
class ClientMetrics:
    """What a handle counts (``ServiceSystem.client_metrics()``): calls by operation and
    outcome, retries, retries the budget refused, re-joins of a new runtime start and
    how long the last outage lasted, calls ended early because their runtime or core
    actor went away."""

    calls: Counter = field(default_factory=Counter)          # (op, outcome) -> n
    retries: Counter = field(default_factory=Counter)        # op -> n
    retries_throttled: int = 0
    rejoins: int = 0
    last_outage_s: float | None = None
    ended_early: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, op: str, outcome: str) -> None:
        with self.lock:
            self.calls[(op, outcome)] += 1

    def retried(self, op: str) -> None:
        with self.lock:
            self.retries[op] += 1

    def snapshot(self, state: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return {
                "calls": {f"{op}:{outcome}": n for (op, outcome), n in sorted(self.calls.items())},
                "retries": dict(sorted(self.retries.items())),
                "retries_throttled": self.retries_throttled,
                "rejoins": self.rejoins, "last_outage_s": self.last_outage_s,
                "ended_early": self.ended_early, **state,
            }


def outcome(error: GrymError | None) -> str:
    return "ok" if error is None else error.code.value
