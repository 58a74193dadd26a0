"""OTP-style restart decisions for one child, without any actor."""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Callable

from .config import RestartSettings


@dataclass(frozen=True)
class RestartDecision:
    restart: bool
    delay_s: float
    reason: str


class RestartPolicy:
    """At most ``max_restarts`` within ``restart_period_s``, with backoff between attempts.

    The first restart in a quiet period is immediate: a single crash should cost
    one fork, not a wait. Each further restart inside the period waits twice as
    long as the one before (``backoff_initial_s``, capped at ``backoff_max_s``),
    jittered so that many services failing together do not restart in lockstep.
    """

    def __init__(self, settings: RestartSettings, rng: Callable[[], float] = random.random):
        self.settings = settings
        self._rng = rng
        self._recent: deque[float] = deque()
        self.total_restarts = 0

    def on_exit(self, now: float, abnormal: bool) -> RestartDecision:
        s = self.settings
        if s.restart == "temporary":
            return RestartDecision(False, 0.0, "temporary service: never restarted")
        if s.restart == "transient" and not abnormal:
            return RestartDecision(False, 0.0, "transient service ended normally")
        while self._recent and now - self._recent[0] > s.restart_period_s:
            self._recent.popleft()
        if len(self._recent) >= s.max_restarts:
            return RestartDecision(
                False, 0.0,
                f"restart limit reached: {len(self._recent)} restarts within {s.restart_period_s:g} s")
        attempt = len(self._recent)
        self._recent.append(now)
        self.total_restarts += 1
        return RestartDecision(True, self._delay(attempt), f"restart {attempt + 1} of {s.max_restarts}")

    def restart_by_request(self) -> None:
        """OTP's restart_child: an operator restarts the child; its window starts afresh
        (a failed child gets its whole ``max_restarts`` again). It counts as a restart."""
        self._recent.clear()
        self.total_restarts += 1

    def _delay(self, attempt: int) -> float:
        if attempt == 0:
            return 0.0
        s = self.settings
        base = min(s.backoff_max_s, s.backoff_initial_s * 2 ** (attempt - 1))
        return base * (1 + s.backoff_jitter * (2 * self._rng() - 1))
