"""The host handle's retry policy, retry budget and connection states, without actors."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest

from host.connection import Connection, State, role_of
from host.retry import ClientMetrics, RetryBudget, RetryPolicy
from host.system import ServiceSystem
from messages.errors import (
    ConfigError, ErrorCode, GrymError, InvalidInput, Overloaded, ServiceUnavailable, is_retryable,
    retryable,
)
from messages.system import ServiceInfo, SystemInfo
from messages.service import ServiceStatus


# -- the policy (gRPC's retryPolicy) ----------------------------------------------------------
def test_backoff_is_full_jitter_under_an_exponential_cap():
    policy = RetryPolicy(initial_backoff_s=0.1, backoff_multiplier=2.0, max_backoff_s=0.5)
    assert [policy.backoff_s(n, rng=lambda: 1.0) for n in (1, 2, 3, 4, 5)] == \
        [0.1, 0.2, 0.4, 0.5, 0.5]
    assert policy.backoff_s(3, rng=lambda: 0.0) == 0.0
    assert policy.backoff_s(2, rng=lambda: 0.5) == pytest.approx(0.1)


def test_only_marked_errors_and_chosen_codes_are_retried():
    policy = RetryPolicy(retry_on=frozenset({"OVERLOADED"}))
    assert policy.retryable(retryable("the router was restarted"))
    assert not policy.retryable(ServiceUnavailable("service 'x' has failed"))
    assert policy.retryable(Overloaded("full"))
    assert not RetryPolicy().retryable(Overloaded("full"))
    assert RetryPolicy(reads=False).covers("write") and not RetryPolicy(reads=False).covers("read")
    assert not RetryPolicy(enabled=False).covers("read")
    with pytest.raises(ConfigError):
        RetryPolicy(max_attempts=0)


def test_the_budget_stops_retries_while_most_attempts_fail():
    budget = RetryBudget(RetryPolicy(max_tokens=10, token_ratio=1))
    for _ in range(5):
        assert budget.allows_retry()
        budget.failed()
    assert not budget.allows_retry()  # 5 of 10 tokens left: at half, retries stop
    budget.succeeded()
    assert budget.allows_retry()


# -- ServiceSystem.call: the policy applied --------------------------------------------------------
def handle(**policy) -> SimpleNamespace:
    """What ``ServiceSystem.call`` uses of a handle."""
    p = RetryPolicy(**{"initial_backoff_s": 0.001, "max_backoff_s": 0.002, **policy})
    return SimpleNamespace(retry_policy=p, _budget=RetryBudget(p), _metrics=ClientMetrics())


def failing(times: int, error: GrymError):
    calls = []

    def attempt(left: float):
        calls.append(left)
        if len(calls) <= times:
            raise error
        return "done"
    return attempt, calls


def test_an_idempotent_call_is_sent_again_until_it_succeeds():
    h = handle()
    attempt, calls = failing(2, retryable("the context actor was restarted"))
    assert ServiceSystem.call(h, "retrieve", "read", 5.0, attempt) == "done"
    assert len(calls) == 3
    snap = h._metrics.snapshot({})
    assert snap["calls"] == {"retrieve:ok": 1} and snap["retries"] == {"retrieve": 2}


@pytest.mark.parametrize("kind, error", [
    (None, retryable("gone")),                         # not idempotent (a task, a restart)
    ("read", InvalidInput("bad")),                     # not retryable
    ("read", ServiceUnavailable("service has failed")),  # unavailable, but not marked
])
def test_other_calls_fail_at_once(kind, error):
    h = handle()
    attempt, calls = failing(1, error)
    with pytest.raises(type(error)):
        ServiceSystem.call(h, "op", kind, 5.0, attempt)
    assert len(calls) == 1
    assert h._metrics.snapshot({})["calls"] == {f"op:{error.code.value}": 1}


def test_retries_stop_at_max_attempts_and_at_the_deadline():
    h = handle(max_attempts=3)
    attempt, calls = failing(10, retryable("gone"))
    with pytest.raises(ServiceUnavailable):
        ServiceSystem.call(h, "op", "read", 5.0, attempt)
    assert len(calls) == 3
    slow = handle(initial_backoff_s=10.0, max_backoff_s=10.0)
    attempt, calls = failing(10, retryable("gone"))
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        ServiceSystem.call(slow, "op", "read", 0.5, attempt)
    assert time.monotonic() - started < 0.5, "no wait that ends past the call's timeout"


def test_the_budget_refusal_is_counted():
    h = handle(max_tokens=2, token_ratio=0.1)
    attempt, _ = failing(100, retryable("gone"))
    for _ in range(3):
        with pytest.raises(ServiceUnavailable):
            ServiceSystem.call(h, "op", "read", 5.0, attempt)
    assert h._metrics.snapshot({})["retries_throttled"] >= 1


# -- the connection's states -------------------------------------------------------------------------
def info(incarnation: str = "a", router: str = "router", services=()) -> SystemInfo:
    return SystemInfo(supervisor="sup", router=router, context="ctx", services=services,
                      default_task_timeout_s=5.0, incarnation=incarnation, pid=None)


def connection() -> Connection:
    return Connection(asys=None, info=info(), address="127.0.0.1", port=1, launcher=None,
                      metrics=ClientMetrics())


def test_calls_wait_for_the_rejoin_within_their_timeout():
    conn = connection()
    conn.lose("its supervisor ended")
    with pytest.raises(ServiceUnavailable) as raised:
        conn.wait_connected(time.monotonic() + 0.05)
    assert is_retryable(raised.value)
    threading.Timer(0.1, conn.rejoined, args=(info("b"),)).start()
    epoch, now = conn.wait_connected(time.monotonic() + 5)
    assert (epoch, now.incarnation, conn.state) == (1, "b", State.CONNECTED)
    assert conn.metrics.rejoins == 1 and conn.metrics.last_outage_s >= 0.1


def test_a_closed_connection_is_not_retryable():
    conn = connection()
    conn.close("the runtime's launcher has exited")
    with pytest.raises(ServiceUnavailable) as raised:
        conn.wait_connected(time.monotonic() + 5)
    assert not is_retryable(raised.value) and "launcher" in raised.value.message


def test_a_waiting_call_learns_that_its_actor_or_runtime_went_away():
    conn = connection()
    service = ServiceInfo(name="echo", kind="echo", status=ServiceStatus.ONLINE, address="svc")
    conn.info = info(services=(service,))
    assert role_of(conn.info, "router") == "the router"
    assert role_of(conn.info, "svc") == "service 'echo'"
    assert role_of(conn.info, "mine") is None
    assert conn.gone_since(0, "router", "the router") is None
    conn.update(info(router="router-2"))  # the router was restarted
    assert conn.gone_since(0, "router", "the router") == "the router was restarted"
    assert conn.gone_since(0, "mine", None) is None  # not one of the runtime's: not tracked
    conn.update(info(incarnation="other", router="x"))  # a stale answer of another start
    assert conn.info.router == "router-2"
    conn.lose("its admin ended")
    assert "went away" in conn.gone_since(0, "ctx", "the context actor")
    assert ErrorCode.SERVICE_UNAVAILABLE is retryable("x").code
