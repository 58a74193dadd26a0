"""Health verdicts for one service from its heartbeats, without any actor.

States move ONLINE -> DEGRADED -> UNHEALTHY, and back only through DEGRADED:
a service that was unhealthy must look well for one more heartbeat before it
counts as online again. UNHEALTHY comes with the action to kill the process,
which the supervisor's restart policy then handles like any other exit.
"""
from __future__ import annotations

from dataclasses import dataclass

from messages.service import HeartbeatAck, ServiceStatus

from .config import HealthSettings

ONLINE, DEGRADED, UNHEALTHY = ServiceStatus.ONLINE, ServiceStatus.DEGRADED, ServiceStatus.UNHEALTHY


@dataclass(frozen=True)
class HealthVerdict:
    state: ServiceStatus
    kill: bool
    reason: str


class HealthTracker:
    """Verdicts for one child generation, from the heartbeats it answered.

    Until a child answers its first heartbeat it is starting (a context store
    loading from disk, say): only ``startup_timeout_s`` applies to it then.
    """

    def __init__(self, settings: HealthSettings, max_memory: int | None = None,
                 started_at: float = 0.0):
        self.settings = settings
        self.max_memory = max_memory
        self.started_at = started_at
        self.unanswered = 0
        self.last_ack: HeartbeatAck | None = None
        self.state = ONLINE

    def heartbeat_sent(self) -> None:
        self.unanswered += 1

    def ack_received(self, ack: HeartbeatAck) -> None:
        self.unanswered = 0
        self.last_ack = ack

    def assess(self, now: float) -> HealthVerdict:
        verdict = self._raw_verdict(now)
        if self.state is UNHEALTHY and verdict.state is ONLINE:
            verdict = HealthVerdict(DEGRADED, False, "recovering: was unhealthy")
        self.state = verdict.state
        return verdict

    def _raw_verdict(self, now: float) -> HealthVerdict:
        s, ack = self.settings, self.last_ack
        if ack is None:
            if now - self.started_at > s.startup_timeout_s:
                return HealthVerdict(UNHEALTHY, True, f"did not answer a heartbeat within "
                                                      f"{s.startup_timeout_s:g} s of starting")
            return HealthVerdict(self.state, False, "starting")
        # The heartbeat just sent is not late yet; the ones before it are.
        missed = max(0, self.unanswered - 1)
        if missed >= s.missed_heartbeats:
            return HealthVerdict(UNHEALTHY, True, f"missed {missed} heartbeats")
        if ack is not None and ack.overdue_s > s.hang_grace_s:
            return HealthVerdict(UNHEALTHY, True,
                                 f"hung: a task is {ack.overdue_s:.2f} s past its deadline")
        # One late answer is noise (a busy moment); half the limit is a trend.
        if missed >= max(1, s.missed_heartbeats // 2):
            return HealthVerdict(DEGRADED, False, f"missed {missed} heartbeats")
        if ack is None:
            return HealthVerdict(ONLINE, False, "no heartbeat answered yet")
        if ack.recent_requests >= s.degrade_min_requests and ack.error_rate >= s.degrade_error_rate:
            return HealthVerdict(DEGRADED, False,
                                 f"error rate {ack.error_rate:.0%} over {ack.recent_requests} requests")
        if self.max_memory is not None and ack.rss_bytes > self.max_memory:
            return HealthVerdict(DEGRADED, False,
                                 f"memory {ack.rss_bytes / 1e6:.0f} MB above the {self.max_memory / 1e6:.0f} MB limit")
        return HealthVerdict(ONLINE, False, "healthy")
