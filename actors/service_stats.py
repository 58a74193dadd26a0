"""Request counts, latency percentiles and the recent error rate of one service."""
from __future__ import annotations

import time
from collections import deque

import numpy as np


class ServiceStats:
    def __init__(self, latency_window: int = 2048, error_window: int = 100):
        self.requests = self.successes = self.errors = 0
        self.batches = 0
        self.batched_tasks = 0
        self.last_processed_at: float | None = None
        self._latencies_ms: deque[float] = deque(maxlen=latency_window)
        self._recent_ok: deque[bool] = deque(maxlen=error_window)

    def record(self, ok: bool, latency_ms: float) -> None:
        self.requests += 1
        if ok:
            self.successes += 1
        else:
            self.errors += 1
        self._recent_ok.append(ok)
        self._latencies_ms.append(latency_ms)
        self.last_processed_at = time.time()

    def record_batch(self, size: int) -> None:
        self.batches += 1
        self.batched_tasks += size

    @property
    def recent_requests(self) -> int:
        return len(self._recent_ok)

    @property
    def recent_error_rate(self) -> float:
        if not self._recent_ok:
            return 0.0
        return 1.0 - sum(self._recent_ok) / len(self._recent_ok)

    def latency_summary(self) -> dict[str, float]:
        if not self._latencies_ms:
            return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "mean": 0.0}
        values = np.fromiter(self._latencies_ms, dtype=float)
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "mean": float(values.mean())}
