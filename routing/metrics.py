"""Request counts and stage latency histograms the router keeps, as plain data.

The daemon's Prometheus exporter asks the router for a snapshot and exposes
it; nothing here knows about HTTP. Labels stay bounded: a task type that has
no route is counted as "unrouted", never under the caller's string.
"""
from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

from messages.system import BUCKETS_S, RouterMetricsReport
from messages.task import TaskResult

STAGES = ("total", "queue", "compute", "routing", "context")


@dataclass
class Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS_S) + 1))
    sum: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS_S, seconds)] += 1
        self.sum += seconds


class RouterMetrics:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.stages: dict[tuple[str, str], Histogram] = {}

    def record(self, service: str, task_type: str, result: TaskResult) -> None:
        outcome = "ok" if result.ok else result.error.code.value.lower()
        self.requests[(service, task_type, outcome)] += 1
        if not result.ok:
            return
        m = result.metrics
        for stage, ms in (("total", m.total_ms), ("queue", m.queue_ms),
                          ("compute", m.execution_ms), ("routing", m.routing_ms),
                          ("context", m.context_fetch_ms)):
            self.stages.setdefault((service, stage), Histogram()).observe(ms / 1000)

    def record_refusal(self, service: str, task_type: str, code: str) -> None:
        self.requests[(service, task_type, code.lower())] += 1

    def merge(self, report: RouterMetricsReport) -> None:
        """Add another's counts (a host's, for the tasks it sent straight to services)."""
        self.requests.update(report.requests)
        for key, (counts, total) in report.stages.items():
            if len(counts) != len(BUCKETS_S) + 1:
                continue  # other buckets: not comparable
            h = self.stages.setdefault(key, Histogram())
            h.counts = [a + b for a, b in zip(h.counts, counts)]
            h.sum += total

    def snapshot(self, in_flight: dict[str, int], late_results: int) -> RouterMetricsReport:
        return RouterMetricsReport(
            requests=dict(self.requests),
            stages={key: (list(h.counts), h.sum) for key, h in self.stages.items()},
            in_flight=in_flight, late_results=late_results)
