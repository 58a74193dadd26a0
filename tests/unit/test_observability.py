"""The Prometheus collector, against fake actors: one scrape, what it asks and what it shows."""
from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from routing.metrics import RouterMetrics
from messages.system import GetRouterMetrics
from messages import TaskMetrics, TaskResult
from messages.context import ContextStats, GetContextStats
from messages.service import ServiceMetrics, ServiceStatus
from messages.system import (
    GetHealth, GetServiceMetrics, GetSystemInfo, HealthReport, MetricsReport, ServiceInfo,
    SystemInfo,
)
from host.observability import RuntimeCollector

INFO = SystemInfo(supervisor="sup", router="router", context="context", services=(
    ServiceInfo("echo", "echo", ServiceStatus.ONLINE, restarts=2),), default_task_timeout_s=30)


def router_report():
    metrics = RouterMetrics()
    metrics.record("echo", "echo", TaskResult.success("t", 1, TaskMetrics(total_ms=3.0)))
    return metrics.snapshot({"echo": 0}, late_results=0)


class FakeEndpoint:
    """Answers like the runtime's actors; ``stale`` replies come first, as a late
    answer to an earlier, timed-out request would."""

    def __init__(self, answers: dict[type, Any], stale: list[Any]):
        self.answers, self.stale, self.asked = answers, list(stale), []

    def ask(self, address: Any, msg: Any, timeout: float) -> Any:
        self.asked.append((address, type(msg).__name__))
        if self.stale:
            self.stale.append(self.answers.get(type(msg)))
            return self.stale.pop(0)
        return self.answers.get(type(msg))

    def listen(self, timeout: float) -> Any:
        return self.stale.pop(0) if self.stale else None


class FakeSystem:
    def __init__(self, endpoint: FakeEndpoint):
        self.endpoint = endpoint

    @contextlib.contextmanager
    def private(self):
        yield self.endpoint


def scrape(collector: RuntimeCollector) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry).decode()


def test_a_scrape_asks_every_part_and_shows_it():
    endpoint = FakeEndpoint({
        GetSystemInfo: INFO,
        GetServiceMetrics: MetricsReport((ServiceMetrics(name="echo", rss_bytes=5_000_000,
                                                         queue_depth=1),)),
        GetHealth: HealthReport(statuses={"echo": ServiceStatus.ONLINE},
                                counts={"service_restarted": 2}),
        GetRouterMetrics: router_report(),
        GetContextStats: ContextStats(items=3, bytes=300, evictions=0, expirations=1),
    }, stale=[])
    text = scrape(RuntimeCollector(FakeSystem(endpoint), "sup", timeout_s=0.5))
    assert [a for a, _ in endpoint.asked] == ["sup", "sup", "sup", "router", "context"]
    for line in ('grym_service_up{service="echo"} 1.0',
                 'grym_service_restarts_total{service="echo"} 2.0',
                 'grym_service_resident_memory_bytes{service="echo"} 5e+06',
                 'grym_health_events_total{kind="service_restarted"} 2.0',
                 'grym_requests_total{outcome="ok",service="echo",type="echo"} 1.0',
                 'grym_task_stage_seconds_count{service="echo",stage="total"} 1.0',
                 "grym_context_items 3.0", "grym_context_expirations_total 1.0",
                 "grym_scrape_errors_total 0.0"):
        assert line in text, line


def test_a_late_answer_is_skipped_and_a_silent_part_left_out():
    stale_metrics = MetricsReport(())  # answers an earlier scrape's GetServiceMetrics
    endpoint = FakeEndpoint({GetSystemInfo: INFO, GetHealth: HealthReport(statuses={}),
                             GetServiceMetrics: MetricsReport(()),
                             GetRouterMetrics: router_report()}, stale=[stale_metrics])
    text = scrape(RuntimeCollector(FakeSystem(endpoint), "sup", timeout_s=0.2))
    assert 'grym_service_up{service="echo"} 1.0' in text  # SystemInfo found behind the stale one
    assert "grym_context_items" not in text               # the context actor did not answer
    assert "grym_scrape_errors_total 1.0" in text
    # No label carries a task id or an item id: series stay bounded.
    assert '"t"' not in text


def test_the_launchers_own_handle_shows_its_calls_and_retries():
    from host.retry import ClientMetrics
    counts = ClientMetrics()
    counts.count("store", "ok")
    counts.count("task", "SERVICE_UNAVAILABLE")
    counts.retried("store")
    counts.rejoins = 1
    collector = RuntimeCollector(FakeSystem(FakeEndpoint({}, stale=[])), "sup", timeout_s=0.05)
    collector.client = lambda: counts.snapshot({})
    text = scrape(collector)
    for line in ('grym_client_calls_total{op="store",outcome="ok"} 1.0',
                 'grym_client_calls_total{op="task",outcome="SERVICE_UNAVAILABLE"} 1.0',
                 'grym_client_retries_total{op="store"} 1.0', "grym_client_rejoins_total 1.0",
                 "grym_client_retries_throttled_total 0.0"):
        assert line in text, line
