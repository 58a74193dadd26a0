"""Restart, health, batching and routing decisions, without any actor system."""
from __future__ import annotations

import pytest

from actors.batching import BatchPolicy, Queued, TaskQueue
from routing.table import Pending, PendingTasks, RouteTable
from messages import Task
from messages.errors import (
    ErrorCode, InvalidTaskType, Overloaded, ServiceNotFound, ServiceUnavailable, ShuttingDown,
)
from messages.service import HeartbeatAck, ServiceStatus
from messages.system import HealthCause, ServiceDirectoryUpdate
from supervisor import health_policy as health
from supervisor.config import HealthSettings, RestartSettings
from supervisor.health_policy import HealthTracker, HealthVerdict, Observation, judge
from supervisor.restart_policy import RestartPolicy

S = ServiceStatus


# -- restart policy ------------------------------------------------------------
def policy(**kw):
    return RestartPolicy(RestartSettings(**kw), rng=lambda: 0.5)  # jitter factor 1.0


def test_first_restart_is_immediate_then_backoff_doubles():
    p = policy(max_restarts=5, backoff_initial_s=0.1, backoff_max_s=10)
    delays = [p.on_exit(now=t, abnormal=True).delay_s for t in range(4)]
    assert delays == [0.0, 0.1, 0.2, 0.4]


def test_backoff_is_capped_and_jittered():
    settings = RestartSettings(max_restarts=50, restart_period_s=1000, backoff_initial_s=1,
                               backoff_max_s=3, backoff_jitter=0.2)
    low = RestartPolicy(settings, rng=lambda: 0.0)
    high = RestartPolicy(settings, rng=lambda: 0.999)
    low_delays = [low.on_exit(t, True).delay_s for t in range(6)]
    high_delays = [high.on_exit(t, True).delay_s for t in range(6)]
    assert low_delays[-1] == pytest.approx(3 * 0.8)
    assert high_delays[-1] == pytest.approx(3 * 1.2, rel=1e-2)


def test_restart_limit_within_period_then_window_slides():
    p = policy(max_restarts=2, restart_period_s=10)
    assert p.on_exit(0, True).restart
    assert p.on_exit(1, True).restart
    refused = p.on_exit(2, True)
    assert not refused.restart and "limit" in refused.reason
    assert p.on_exit(12, True).restart  # the first two left the 10 s window
    assert p.total_restarts == 3


@pytest.mark.parametrize("kind,abnormal,expected", [
    ("permanent", False, True), ("permanent", True, True),
    ("transient", False, False), ("transient", True, True),
    ("temporary", True, False),
])
def test_restart_types(kind, abnormal, expected):
    assert policy(restart=kind).on_exit(0, abnormal).restart is expected


# -- health policy -------------------------------------------------------------
def ack(**kw):
    return HeartbeatAck(**{"seq": 1, "pid": 1, "rss_bytes": 1000, **kw})


SETTINGS = HealthSettings(missed_heartbeats=4, hang_grace_s=0.5, startup_timeout_s=10,
                          degrade_error_rate=0.5, degrade_min_requests=10)


def seen(missed=0, acked=True, state=S.ONLINE, now=1.0, max_memory=10_000, **ack_fields):
    """What a rule sees: by default an answered, healthy child."""
    return Observation(SETTINGS, now=now, started_at=0.0, missed=missed,
                       ack=ack(**ack_fields) if acked else None, state=state,
                       max_memory=max_memory)


def tracker(**kw):
    return HealthTracker(HealthSettings(missed_heartbeats=3, hang_grace_s=0.5, **kw),
                         max_memory=10_000)


# One test per rule: what it finds, what it lets pass.
def test_rule_startup_timeout():
    assert health.startup_timeout(seen(acked=False, now=9.0)) is None
    v = health.startup_timeout(seen(acked=False, now=10.5))
    assert (v.state, v.cause, v.code) == (S.UNHEALTHY, HealthCause.STARTUP_TIMEOUT,
                                          ErrorCode.SERVICE_UNAVAILABLE)
    assert v.kill and "within 10 s" in v.reason
    assert health.startup_timeout(seen(acked=True, now=99.0)) is None  # it answered once


def test_rule_starting_keeps_the_state_until_the_first_answer():
    v = health.starting(seen(acked=False, state=S.DEGRADED, missed=50))
    assert (v.state, v.cause, v.kill) == (S.DEGRADED, HealthCause.STARTING, False)
    assert health.starting(seen()) is None


def test_rule_missed_heartbeats_kills():
    assert health.missed_heartbeats(seen(missed=3)) is None
    v = health.missed_heartbeats(seen(missed=4))
    assert (v.state, v.cause, v.code) == (S.UNHEALTHY, HealthCause.MISSED_HEARTBEATS,
                                          ErrorCode.SERVICE_UNAVAILABLE)


def test_rule_hung_kills_with_timeout_for_callers():
    assert health.hung(seen(overdue_s=0.5)) is None  # within the grace
    v = health.hung(seen(overdue_s=0.6))
    assert (v.state, v.cause, v.code) == (S.UNHEALTHY, HealthCause.HUNG, ErrorCode.TIMEOUT)
    assert "0.60 s past its deadline" in v.reason


def test_rule_late_heartbeats_degrade():
    assert health.late_heartbeats(seen(missed=1)) is None  # one late answer is noise
    v = health.late_heartbeats(seen(missed=2))
    assert (v.state, v.cause, v.code) == (S.DEGRADED, HealthCause.MISSED_HEARTBEATS, None)


def test_rule_error_rate_degrades():
    assert health.error_rate(seen(error_rate=0.9, recent_requests=9)) is None  # too few to judge
    assert health.error_rate(seen(error_rate=0.4, recent_requests=10)) is None
    v = health.error_rate(seen(error_rate=0.6, recent_requests=10))
    assert (v.state, v.cause) == (S.DEGRADED, HealthCause.ERROR_RATE)
    assert "60% over 10 requests" in v.reason


def test_rule_memory_degrades():
    assert health.memory(seen(rss_bytes=10_000)) is None
    assert health.memory(seen(rss_bytes=20_000, max_memory=None)) is None  # no limit set
    v = health.memory(seen(rss_bytes=20_000))
    assert (v.state, v.cause) == (S.DEGRADED, HealthCause.MEMORY)


def test_rule_recovering_after_unhealthy():
    assert health.recovering(seen(state=S.DEGRADED)) is None
    v = health.recovering(seen(state=S.UNHEALTHY))
    assert (v.state, v.cause) == (S.DEGRADED, HealthCause.RECOVERING)


def test_rules_are_tried_in_order_and_healthy_when_none_finds_anything():
    assert judge(seen()).cause is HealthCause.HEALTHY
    # Both a kill and a degrade apply: the kill comes first in the chain.
    assert judge(seen(missed=5, error_rate=1.0, recent_requests=50)).cause is \
        HealthCause.MISSED_HEARTBEATS
    assert judge(seen(missed=2, overdue_s=9.0)).cause is HealthCause.HUNG
    # A new rule is one function in the list.
    def queue_too_deep(o):
        return (HealthVerdict(S.DEGRADED, HealthCause.ERROR_RATE, "queue") if o.ack.queue_depth > 5
                else None)
    rules = (*health.RULES, queue_too_deep)
    assert judge(seen(queue_depth=6), rules).reason == "queue"
    assert judge(seen(queue_depth=1), rules).cause is HealthCause.HEALTHY


def test_a_starting_child_is_judged_only_by_the_startup_timeout():
    t = HealthTracker(HealthSettings(missed_heartbeats=2, startup_timeout_s=10), started_at=0.0)
    for _ in range(20):  # a context store loading from disk answers nothing for a while
        t.heartbeat_sent()
    assert t.assess(now=9.0).kill is False
    verdict = t.assess(now=10.5)
    assert verdict.kill and verdict.cause is HealthCause.STARTUP_TIMEOUT
    t.ack_received(ack())
    t.heartbeat_sent()
    assert t.assess(now=11.0).state is S.DEGRADED  # back from unhealthy through degraded


def test_missed_heartbeats_degrade_then_kill():
    t = tracker()
    t.ack_received(ack())
    states = []
    for _ in range(4):
        t.heartbeat_sent()
        states.append((t.assess(1.0).state, t.assess(1.0).kill))
    assert states == [(S.ONLINE, False), (S.DEGRADED, False), (S.DEGRADED, False),
                      (S.UNHEALTHY, True)]


def test_recovery_from_unhealthy_passes_through_degraded():
    t = tracker()
    t.ack_received(ack())
    for _ in range(5):
        t.heartbeat_sent()
    assert t.assess(1.0).state is S.UNHEALTHY
    t.ack_received(ack())
    assert t.assess(1.0).cause is HealthCause.RECOVERING
    assert t.assess(1.0).state is S.ONLINE


# -- batching ------------------------------------------------------------------
def test_batch_policy():
    p = BatchPolicy(max_batch_size=4, max_delay_s=0.01)
    assert p.plan(0, 0, False).take == 0
    assert p.plan(3, 0, True).take == 0               # worker busy: wait for it
    assert p.plan(5, 0, False).take == 4              # full batch at once
    assert p.plan(1, 0, False).take == 1              # a lone task: nothing else is expected
    p.batch_done(answered=2, queued=1, now=0.0)       # its callers may send again
    assert p.plan(2, 0.004, False).wait_s == pytest.approx(0.006)
    assert p.plan(3, 0.004, False).take == 3          # every expected task is here
    assert p.plan(2, 0.011, False).take == 2          # waited long enough
    assert BatchPolicy(8, 0.0).plan(1, 0, False).take == 1  # no delay configured


def test_task_queue_drops_expired():
    q = TaskQueue()
    for i, deadline in enumerate([5, 1, 5, 5]):
        q.push(Queued(i, Task(id=f"t{i}", type="echo"), None, 0.0, deadline))
    batch, expired = q.take(2, now=2)
    assert [b.request_id for b in batch] == [0, 2] and [e.request_id for e in expired] == [1]
    assert len(q) == 1


# -- routing -------------------------------------------------------------------
def table():
    t = RouteTable(routes={"echo": "echo", "other": "missing"})
    t.update(ServiceDirectoryUpdate("echo", "addr", S.ONLINE, 1, max_queue=2))
    return t


def test_route_table_admission():
    t = table()
    assert t.service_for("echo") == "echo"
    with pytest.raises(InvalidTaskType):
        t.service_for("nope")
    with pytest.raises(ServiceNotFound):
        t.admit("missing")
    entry = t.admit("echo")
    entry.in_flight = 2
    with pytest.raises(Overloaded):
        t.admit("echo")
    t.update(ServiceDirectoryUpdate("echo", None, S.UNHEALTHY, 1, max_queue=2))
    with pytest.raises(ServiceUnavailable):
        t.admit("echo")
    t.update(ServiceDirectoryUpdate("echo", "addr2", S.OFFLINE, 2, max_queue=2))
    assert t.admit("echo").in_flight == 0  # a new generation starts empty
    t.draining = True
    with pytest.raises(ShuttingDown):
        t.admit("echo")


def test_pending_tasks_expire_and_get_lost_by_generation():
    p = PendingTasks()
    for i, (service, gen, deadline) in enumerate([("a", 1, 5.0), ("a", 2, 1.0), ("b", 1, 3.0)]):
        p.add(Pending(i, Task(id=f"t{i}", type="x"), None, service, 0.0, deadline, gen))
    assert [x.request_id for x in p.expired(2.0)] == [1]
    assert p.next_deadline() == 3.0
    assert [x.request_id for x in p.lost("a", 1)] == [0]
    assert len(p) == 1 and p.pop(2).task.id == "t2" and p.next_deadline() is None
