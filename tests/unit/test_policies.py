"""Restart, health, batching and routing decisions, without any actor system."""
from __future__ import annotations

import pytest

from actors.batching import BatchPolicy, Queued, TaskQueue
from actors.routing import Pending, PendingTasks, RouteTable
from messages import Task
from messages.errors import InvalidTaskType, Overloaded, ServiceNotFound, ServiceUnavailable, ShuttingDown
from messages.service import HeartbeatAck, ServiceStatus
from messages.system import ServiceDirectoryUpdate
from supervisor.config import HealthSettings, RestartSettings
from supervisor.health_policy import HealthTracker
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
    base = dict(seq=1, name="s", generation=1, pid=1, status=S.ONLINE, queue_depth=0,
                busy_for_s=0.0, overdue_s=0.0, rss_bytes=1000, error_rate=0.0, recent_requests=0)
    return HeartbeatAck(**{**base, **kw})


def tracker(**kw):
    return HealthTracker(HealthSettings(missed_heartbeats=3, hang_grace_s=0.5, **kw),
                         max_memory=10_000)


def test_a_starting_child_is_judged_only_by_the_startup_timeout():
    t = HealthTracker(HealthSettings(missed_heartbeats=2, startup_timeout_s=10), started_at=0.0)
    for _ in range(20):  # a context store loading from disk answers nothing for a while
        t.heartbeat_sent()
    assert t.assess(now=9.0).kill is False
    verdict = t.assess(now=10.5)
    assert verdict.kill and "within 10 s" in verdict.reason
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


def test_hung_task_past_grace_is_killed():
    t = tracker()
    t.heartbeat_sent()
    t.ack_received(ack(overdue_s=0.4))
    assert t.assess(1.0).state is S.ONLINE
    t.ack_received(ack(overdue_s=0.6))
    verdict = t.assess(1.0)
    assert verdict.kill and verdict.reason.startswith("hung")


def test_error_rate_and_memory_degrade():
    t = tracker(degrade_error_rate=0.5, degrade_min_requests=10)
    t.ack_received(ack(error_rate=0.9, recent_requests=5))
    assert t.assess(1.0).state is S.ONLINE  # too few requests to judge
    t.ack_received(ack(error_rate=0.6, recent_requests=10))
    assert t.assess(1.0).state is S.DEGRADED
    t.ack_received(ack(rss_bytes=20_000))
    assert "memory" in t.assess(1.0).reason


def test_recovery_from_unhealthy_passes_through_degraded():
    t = tracker()
    t.ack_received(ack())
    for _ in range(5):
        t.heartbeat_sent()
    assert t.assess(1.0).state is S.UNHEALTHY
    t.ack_received(ack())
    assert t.assess(1.0).state is S.DEGRADED
    assert t.assess(1.0).state is S.ONLINE


# -- batching ------------------------------------------------------------------
def test_batch_policy():
    p = BatchPolicy(max_batch_size=4, max_delay_s=0.01)
    assert p.plan(0, 0, False).take == 0
    assert p.plan(3, 0, True).take == 0               # worker busy: wait for it
    assert p.plan(5, 0, False).take == 4              # full batch at once
    assert p.plan(2, 0.02, False).take == 2           # the oldest has waited long enough
    assert p.plan(2, 0.004, False).wait_s == pytest.approx(0.006)
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
    assert len(p) == 1 and p.pop(2) is not None and p.next_deadline() is None
