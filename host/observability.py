"""Prometheus metrics for a running runtime, served by its launcher.

On each scrape the collector asks the supervisor, the router and the context
actor for their figures (short timeouts; a part that does not answer is left
out of that scrape, and ``grym_scrape_errors_total`` counts it). Names follow
Prometheus conventions: units in the name, ``_total`` for counters, and no
per-task or per-item labels.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

import structlog
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric,
)

from messages.context import ContextStats, GetContextStats
from runtime import frames
from messages.service import ServiceStatus
from messages.system import (
    GetHealth, GetRouterMetrics, GetServiceMetrics, GetSystemInfo, HealthReport, MetricsReport,
    RouterMetricsReport, SystemInfo,
)

log = structlog.get_logger()
UP_STATES = (ServiceStatus.ONLINE, ServiceStatus.DEGRADED)


class RuntimeCollector:
    def __init__(self, asys: Any, supervisor: Any, timeout_s: float):
        self._asys = asys
        self._supervisor = supervisor
        self._timeout_s = timeout_s
        self._scrape_errors = 0
        self._lock = threading.Lock()
        # The launcher's own host handle (the HTTP API's), whose calls and retries are
        # served too: ``ServiceSystem.client_metrics``, or None.
        self.client: Callable[[], dict[str, Any]] | None = None

    def retarget(self, asys: Any, supervisor: Any) -> None:
        """After the launcher restarted the runtime."""
        self._asys, self._supervisor = asys, supervisor

    def collect(self) -> Iterator[Metric]:
        with self._asys.private() as endpoint:
            ask = lambda address, msg, kind: self._ask(endpoint, address, msg, kind)  # noqa: E731
            info: SystemInfo | None = ask(self._supervisor, GetSystemInfo(), SystemInfo)
            metrics: MetricsReport | None = ask(self._supervisor, GetServiceMetrics(), MetricsReport)
            health: HealthReport | None = ask(self._supervisor, GetHealth(), HealthReport)
            router = ask(info.router, GetRouterMetrics(), RouterMetricsReport) if info else None
            context = ask(info.context, GetContextStats(), ContextStats) if info else None
        if info is not None:
            yield from service_families(info, metrics)
        if health is not None:
            yield health_family(health)
        if router is not None:
            yield from router_families(router)
        if context is not None:
            yield from context_families(context)
        errors = CounterMetricFamily("grym_scrape_errors", "Parts of the runtime that did not "
                                     "answer a scrape in time")
        errors.add_metric([], self._scrape_errors)
        yield errors
        yield rejected_frames_family(frames.rejected_frames())
        if self.client is not None:
            yield from client_families(self.client())

    def _ask(self, endpoint: Any, address: Any, msg: Any, kind: type) -> Any:
        deadline = time.monotonic() + self._timeout_s
        reply = endpoint.ask(address, msg, self._timeout_s) if address is not None else None
        # A late answer to an earlier part of this scrape may come first: skip it.
        while reply is not None and not isinstance(reply, kind) \
                and time.monotonic() < deadline:
            reply = endpoint.listen(max(0.0, deadline - time.monotonic()))
        if isinstance(reply, kind):
            return reply
        with self._lock:
            self._scrape_errors += 1
        log.warning("scrape_part_missing", request=type(msg).__name__)
        return None


def service_families(info: SystemInfo, metrics: MetricsReport | None) -> Iterator[Metric]:
    up = GaugeMetricFamily("grym_service_up", "1 when the service takes work (online or "
                           "degraded)", labels=["service"])
    state = GaugeMetricFamily("grym_service_state", "1 for the state the service is in",
                              labels=["service", "state"])
    restarts = CounterMetricFamily("grym_service_restarts", "Restarts by the supervisor",
                                   labels=["service"])
    replicas = GaugeMetricFamily("grym_service_replicas", "Replicas that take work, by the "
                                 "service id they serve", labels=["service"])
    serving: dict[str, int] = {}
    for s in info.services:
        up.add_metric([s.name], 1.0 if s.status in UP_STATES else 0.0)
        for st in ServiceStatus:
            state.add_metric([s.name, st.value], 1.0 if s.status is st else 0.0)
        restarts.add_metric([s.name], s.restarts)
        group = s.replica_of or s.name
        serving[group] = serving.get(group, 0) + (s.status in UP_STATES)
    for group, count in serving.items():
        replicas.add_metric([group], count)
    yield from (up, state, restarts, replicas)
    if metrics is None:
        return
    memory = GaugeMetricFamily("grym_service_resident_memory_bytes",
                               "Resident memory of the service's process", labels=["service"])
    queue = GaugeMetricFamily("grym_service_queue_depth", "Tasks queued or running in the "
                              "service", labels=["service"])
    for m in metrics.services:
        memory.add_metric([m.name], m.rss_bytes)
        queue.add_metric([m.name], m.queue_depth)
    yield from (memory, queue)


def rejected_frames_family(counts: dict[str, int]) -> Metric:
    """Frames the runtime's processes refused unread (runtime.frames); each process
    counts its own in a file that the launcher, which serves this, sums."""
    family = CounterMetricFamily("grym_rejected_frames", "Frames refused before unpickling: "
                                 "bad_tag (missing or wrong key), too_large, bad_header",
                                 labels=["reason"])
    for reason, n in sorted(counts.items()):
        family.add_metric([reason], n)
    return family


def client_families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    """A host handle's own counts (``ServiceSystem.client_metrics()``): its calls by
    operation and outcome, its retries, and its re-joins of a restarted runtime."""
    calls = CounterMetricFamily("grym_client_calls", "Host API calls by operation and outcome",
                                labels=["op", "outcome"])
    for key, n in sorted(snapshot["calls"].items()):
        op, _, result = key.rpartition(":")
        calls.add_metric([op, result], n)
    retries = CounterMetricFamily("grym_client_retries", "Calls sent again by the retry "
                                  "policy", labels=["op"])
    for op, n in sorted(snapshot["retries"].items()):
        retries.add_metric([op], n)
    throttled = CounterMetricFamily("grym_client_retries_throttled", "Retries the retry "
                                    "budget refused")
    throttled.add_metric([], snapshot["retries_throttled"])
    rejoins = CounterMetricFamily("grym_client_rejoins", "Re-joins of a restarted runtime")
    rejoins.add_metric([], snapshot["rejoins"])
    yield from (calls, retries, throttled, rejoins)


def health_family(health: HealthReport) -> Metric:
    family = CounterMetricFamily("grym_health_events", "Health events since the supervisor "
                                 "started", labels=["kind"])
    for kind, n in sorted(health.counts.items()):
        family.add_metric([kind], n)
    return family


def router_families(report: RouterMetricsReport) -> Iterator[Metric]:
    requests = CounterMetricFamily("grym_requests", "Tasks answered by the router",
                                   labels=["service", "type", "outcome"])
    for (service, task_type, outcome), n in sorted(report.requests.items()):
        requests.add_metric([service, task_type, outcome], n)
    yield requests
    stages = HistogramMetricFamily("grym_task_stage_seconds", "Where completed tasks spent "
                                   "their time: total, queue, compute, routing, context",
                                   labels=["service", "stage"])
    for (service, stage), (counts, total) in sorted(report.stages.items()):
        cumulative, buckets = 0, []
        for bound, count in zip(list(report.buckets_s) + [float("inf")], counts):
            cumulative += count
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        stages.add_metric([service, stage], buckets, total)
    yield stages
    in_flight = GaugeMetricFamily("grym_tasks_in_flight", "Tasks accepted and not yet answered",
                                  labels=["service"])
    for service, n in sorted(report.in_flight.items()):
        in_flight.add_metric([service], n)
    yield in_flight
    late = CounterMetricFamily("grym_late_results", "Results that came after their task was "
                               "answered (deadline or lost service)")
    late.add_metric([], report.late_results)
    yield late


def context_families(stats: ContextStats) -> Iterator[Metric]:
    items = GaugeMetricFamily("grym_context_items", "Items in the context store")
    items.add_metric([], stats.items)
    size = GaugeMetricFamily("grym_context_bytes", "Stored size of the context items")
    size.add_metric([], stats.bytes)
    evictions = CounterMetricFamily("grym_context_evictions", "Items evicted to stay under the caps")
    evictions.add_metric([], stats.evictions)
    expirations = CounterMetricFamily("grym_context_expirations", "Items removed at their TTL")
    expirations.add_metric([], stats.expirations)
    yield from (items, size, evictions, expirations)


def serve_metrics(asys: Any, supervisor: Any, address: str, port: int,
                  timeout_s: float) -> RuntimeCollector:
    """Serve the endpoint on ``address:port`` (a daemon thread) and return its collector."""
    collector = RuntimeCollector(asys, supervisor, timeout_s)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    start_http_server(port, addr=address, registry=registry)
    log.info("metrics_serving", address=address, port=port)
    return collector
