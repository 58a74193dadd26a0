"""How many replicas a service should run: Ray Serve's autoscaling policy, as a plain
class (no actor).

Each replica reports its ongoing tasks (queued and running) on every heartbeat. The
policy averages their sum over ``look_back_period_s`` and wants
``ceil(average / target_ongoing_requests)`` replicas, within ``min_replicas`` ..
``max_replicas``. A change is made only once the wish has pointed the same way for
``upscale_delay_s`` (more) or ``downscale_delay_s`` (fewer), so that a burst does not
start replicas and a lull does not stop them. The names are Ray Serve's
``autoscaling_config`` keys; the defaults are shorter, for a single host.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from messages.validation import check, is_int, is_number

MAX_HOLD_S = 60.0   # the longest wait after failed scalings before the next try


@dataclass(frozen=True)
class AutoscalingConfig:
    """A service's ``autoscaling`` table."""

    min_replicas: int = 1
    max_replicas: int = 1
    target_ongoing_requests: float = 2.0   # tasks queued or running per replica
    upscale_delay_s: float = 1.0
    downscale_delay_s: float = 10.0
    look_back_period_s: float = 1.0

    def __post_init__(self) -> None:
        check(is_int(self.min_replicas) and self.min_replicas >= 1, "min_replicas",
              "must be an integer >= 1")
        check(is_int(self.max_replicas) and self.min_replicas <= self.max_replicas <= 64,
              "max_replicas", f"must be an integer from min_replicas ({self.min_replicas}) to 64")
        check(is_number(self.target_ongoing_requests) and self.target_ongoing_requests > 0,
              "target_ongoing_requests", "must be > 0")
        for key in ("upscale_delay_s", "downscale_delay_s", "look_back_period_s"):
            value = getattr(self, key)
            check(is_number(value) and 0 <= value <= 3600, key, "must be between 0 and 3600")

    def clamp(self, replicas: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, replicas))


@dataclass(frozen=True)
class Decision:
    """A change of replicas, with the inputs it was made from (logged and exported)."""

    service: str
    current: int
    desired: int
    ongoing: float          # the averaged sum of ongoing tasks over the replicas
    target: float           # target_ongoing_requests
    waited_s: float         # how long the wish had held

    @property
    def direction(self) -> str:
        return "up" if self.desired > self.current else "down"

    def reason(self) -> str:
        return (f"autoscaling: {self.ongoing:.1f} ongoing tasks over {self.current} replica(s), "
                f"target {self.target:g} per replica, for {self.waited_s:.1f} s: "
                f"{self.current} -> {self.desired} replicas")


class Autoscaler:
    """One service's policy: ``observe`` the replicas' ongoing tasks on each heartbeat,
    then ``decide``; it holds no actor and no clock of its own."""

    def __init__(self, service: str, config: AutoscalingConfig):
        self.service, self.config = service, config
        self._samples: deque[tuple[float, float]] = deque()
        self._wish: int | None = None        # the replica count wanted since _wish_since
        self._wish_since = 0.0
        self._failures = 0                   # scalings in a row whose new replicas failed
        self._hold_until = 0.0

    def failed(self, now: float) -> float:
        """A change could not be made (its new replicas did not come up): hold off, for
        twice as long each time in a row (up to a minute), instead of starting a new
        process every ``upscale_delay_s`` that fails the same way. Returns the hold."""
        self._failures += 1
        hold = min(MAX_HOLD_S, max(1.0, self.config.upscale_delay_s) * 2 ** self._failures)
        self._hold_until = now + hold
        return hold

    def succeeded(self) -> None:
        self._failures = 0

    def observe(self, now: float, ongoing: float) -> None:
        self._samples.append((now, ongoing))
        while self._samples and self._samples[0][0] < now - self.config.look_back_period_s:
            self._samples.popleft()

    def average(self) -> float:
        if not self._samples:
            return 0.0
        return sum(v for _, v in self._samples) / len(self._samples)

    def desired(self) -> int:
        return self.config.clamp(math.ceil(self.average() / self.config.target_ongoing_requests))

    def decide(self, now: float, current: int) -> Decision | None:
        """The change to make now, if the wish has held long enough; None otherwise."""
        if now < self._hold_until:
            return None
        desired = self.desired()
        if desired == current:
            self._wish = None
            return None
        if self._wish is None or (self._wish > current) != (desired > current):
            self._wish, self._wish_since = desired, now   # a new wish (or it turned round)
        self._wish = desired
        delay = self.config.upscale_delay_s if desired > current else self.config.downscale_delay_s
        waited = now - self._wish_since
        if waited < delay:
            return None
        self._wish = None
        return Decision(self.service, current, desired, self.average(),
                        self.config.target_ongoing_requests, waited)
