"""The figures the routes and the status page show, gathered through the host API."""
from __future__ import annotations

from typing import Any, Iterable

from messages.errors import GrymError, ServiceNotFound
from messages.service import ServiceMetrics, ServiceStatus
from messages.system import GetRouterMetrics, RouterMetricsReport, ServiceInfo

SERVING = (ServiceStatus.ONLINE, ServiceStatus.DEGRADED)
VIEW_TIMEOUT_S = 5.0


def service_view(info: ServiceInfo, metrics: ServiceMetrics | None,
                 histogram: dict[str, Any] | None) -> dict[str, Any]:
    m = metrics or ServiceMetrics(name=info.name)
    return {"name": info.name, "replica_of": info.replica_of, "kind": info.kind,
            "state": info.status.value,
            "restarts": info.restarts, "pid": info.pid, "last_error": info.last_error,
            "queue_depth": m.queue_depth, "requests": m.requests, "errors": m.errors,
            "error_rate": m.error_rate, "p50_ms": m.latency_p50_ms, "p95_ms": m.latency_p95_ms,
            "p99_ms": m.latency_p99_ms, "mean_ms": m.latency_mean_ms, "rss_bytes": m.rss_bytes,
            "last_processed_at": m.last_processed_at, "batches": m.batches,
            "mean_batch_size": m.mean_batch_size, "latency_histogram": histogram}


def services(system: Any, name: str | None = None) -> list[dict[str, Any]]:
    """Every service (or the one named) with its state, figures and latency histogram."""
    infos = [s for s in system.services(VIEW_TIMEOUT_S) if name is None or s.name == name]
    if name is not None and not infos:
        raise ServiceNotFound(f"no service named {name!r}", {"service": name})
    metrics = {m.name: m for m in system.metrics(name, VIEW_TIMEOUT_S)}
    histograms = latency_histograms(system)
    return [service_view(s, metrics.get(s.name), histograms.get(s.name)) for s in infos]


def latency_histograms(system: Any) -> dict[str, dict[str, Any]]:
    """Each service's end-to-end task latencies, as the router counts them (the
    buckets of ``grym_task_stage_seconds``); empty while the router restarts."""
    try:
        report = system.ask(system.info.router, GetRouterMetrics(), VIEW_TIMEOUT_S,
                            expect=lambda r: isinstance(r, RouterMetricsReport))
    except GrymError:
        return {}
    bounds_ms = [round(b * 1000, 4) for b in report.buckets_s] + [None]  # None: +Inf
    return {service: {"le_ms": bounds_ms, "counts": list(counts), "sum_ms": total * 1000}
            for (service, stage), (counts, total) in report.stages.items() if stage == "total"}


def context_stats(system: Any) -> dict[str, Any]:
    s = system.context.stats(VIEW_TIMEOUT_S)
    return {"items": s.items, "bytes": s.bytes, "evictions": s.evictions,
            "expirations": s.expirations}


def not_ready(infos: Iterable[ServiceInfo], eager: frozenset[str]) -> list[str]:
    """Why the runtime is not ready: every eager service must be serving."""
    states = {s.name: s.status for s in infos}
    return [f"service {name!r} is {states[name].value if name in states else 'missing'}"
            for name in sorted(eager) if states.get(name) not in SERVING]
