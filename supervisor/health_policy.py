"""Health verdicts for one child from its heartbeats, without any actor.

A verdict is the answer of the first rule in ``RULES`` that has one: each rule
is a small function of what the supervisor observed at one heartbeat tick,
returning a verdict or None to pass to the next (structlog's processor chain
is the model). A new rule is one function in that list and one test.

States move ONLINE -> DEGRADED -> UNHEALTHY, and back only through DEGRADED:
a child that was unhealthy must look well for one more heartbeat before it
counts as online again. UNHEALTHY comes with the action to kill the process
(which the restart policy then handles like any other exit) and the error
code that callers of a task lost with it get.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from messages.errors import ErrorCode
from messages.service import HeartbeatAck, ServiceStatus
from messages.system import HealthCause

from .config import HealthSettings

ONLINE, DEGRADED, UNHEALTHY = ServiceStatus.ONLINE, ServiceStatus.DEGRADED, ServiceStatus.UNHEALTHY
C = HealthCause


@dataclass(frozen=True)
class HealthVerdict:
    state: ServiceStatus
    cause: HealthCause
    reason: str                      # for people: logs and health events
    code: ErrorCode | None = None    # for the callers of tasks lost when it is killed

    @property
    def kill(self) -> bool:
        return self.state is UNHEALTHY


@dataclass(frozen=True)
class Observation:
    """What a rule sees at one heartbeat tick."""

    settings: HealthSettings
    now: float
    started_at: float
    missed: int                    # heartbeats unanswered, not counting the one just sent
    ack: HeartbeatAck | None       # the latest answer; None until the first
    state: ServiceStatus           # the previous verdict's
    max_memory: int | None = None  # bytes


Rule = Callable[[Observation], "HealthVerdict | None"]


def startup_timeout(o: Observation) -> HealthVerdict | None:
    limit = o.settings.startup_timeout_s
    if o.ack is None and o.now - o.started_at > limit:
        return HealthVerdict(UNHEALTHY, C.STARTUP_TIMEOUT,
                             f"did not answer a heartbeat within {limit:g} s of starting",
                             ErrorCode.SERVICE_UNAVAILABLE)
    return None


def starting(o: Observation) -> HealthVerdict | None:
    # Until a child answers its first heartbeat (a context store loading from
    # disk, say) only the start-up timeout applies to it.
    if o.ack is None:
        return HealthVerdict(o.state, C.STARTING, "starting")
    return None


def missed_heartbeats(o: Observation) -> HealthVerdict | None:
    if o.missed >= o.settings.missed_heartbeats:
        return HealthVerdict(UNHEALTHY, C.MISSED_HEARTBEATS, f"missed {o.missed} heartbeats",
                             ErrorCode.SERVICE_UNAVAILABLE)
    return None


def hung(o: Observation) -> HealthVerdict | None:
    if o.ack is not None and o.ack.overdue_s > o.settings.hang_grace_s:
        return HealthVerdict(UNHEALTHY, C.HUNG,
                             f"hung: a task is {o.ack.overdue_s:.2f} s past its deadline",
                             ErrorCode.TIMEOUT)
    return None


def late_heartbeats(o: Observation) -> HealthVerdict | None:
    # One late answer is noise (a busy moment); half the limit is a trend.
    if o.missed >= max(1, o.settings.missed_heartbeats // 2):
        return HealthVerdict(DEGRADED, C.MISSED_HEARTBEATS, f"missed {o.missed} heartbeats")
    return None


def error_rate(o: Observation) -> HealthVerdict | None:
    s, ack = o.settings, o.ack
    if (ack is not None and ack.recent_requests >= s.degrade_min_requests
            and ack.error_rate >= s.degrade_error_rate):
        return HealthVerdict(DEGRADED, C.ERROR_RATE,
                             f"error rate {ack.error_rate:.0%} over {ack.recent_requests} requests")
    return None


def memory(o: Observation) -> HealthVerdict | None:
    if o.max_memory is not None and o.ack is not None and o.ack.rss_bytes > o.max_memory:
        return HealthVerdict(DEGRADED, C.MEMORY,
                             f"memory {o.ack.rss_bytes / 1e6:.0f} MB above the "
                             f"{o.max_memory / 1e6:.0f} MB limit")
    return None


def recovering(o: Observation) -> HealthVerdict | None:
    # Last in RULES: reached only when no rule above found a problem.
    if o.state is UNHEALTHY:
        return HealthVerdict(DEGRADED, C.RECOVERING, "recovering: was unhealthy")
    return None


def healthy(o: Observation) -> HealthVerdict:
    return HealthVerdict(ONLINE, C.HEALTHY, "healthy")


# In order: killing verdicts before degrading ones; ``recovering`` last.
RULES: tuple[Rule, ...] = (startup_timeout, starting, missed_heartbeats, hung, late_heartbeats,
                           error_rate, memory, recovering)


def judge(o: Observation, rules: Sequence[Rule] = RULES) -> HealthVerdict:
    """The first verdict a rule gives; healthy when none finds anything."""
    for rule in rules:
        verdict = rule(o)
        if verdict is not None:
            return verdict
    return healthy(o)


class HealthTracker:
    """Verdicts for one child generation, from the heartbeats it answered."""

    def __init__(self, settings: HealthSettings, max_memory: int | None = None,
                 started_at: float = 0.0, rules: Sequence[Rule] = RULES):
        self.settings = settings
        self.max_memory = max_memory
        self.started_at = started_at
        self.rules = rules
        self.unanswered = 0
        self.last_ack: HeartbeatAck | None = None
        self.state = ONLINE

    def heartbeat_sent(self) -> None:
        self.unanswered += 1

    def ack_received(self, ack: HeartbeatAck) -> None:
        self.unanswered = 0
        self.last_ack = ack

    def assess(self, now: float) -> HealthVerdict:
        # The heartbeat just sent is not late yet; the ones before it are.
        verdict = judge(Observation(self.settings, now, self.started_at,
                                    max(0, self.unanswered - 1), self.last_ack, self.state,
                                    self.max_memory), self.rules)
        self.state = verdict.state
        return verdict
