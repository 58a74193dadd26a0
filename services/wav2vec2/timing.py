"""Bare-model timing: how long one forward pass takes, without any actor around it.

A benchmark compares these numbers with end-to-end task latencies to see what
the runtime adds. Run it in the process that loaded the model, never in the
supervisor (a torch forward pass there makes later forks hang).
"""
from __future__ import annotations

import statistics
import time

import numpy as np

from .model import LoadedModel, run_batch


def time_forward(loaded: LoadedModel, seconds: float, batch_size: int, repeats: int = 5,
                 warmup: int = 1, all_layers: bool = False, seed: int = 0) -> dict[str, float]:
    """Milliseconds for ``run_batch`` on ``batch_size`` noise clips of ``seconds`` each."""
    rng = np.random.default_rng(seed)
    clips = [(0.1 * rng.standard_normal(round(seconds * loaded.sample_rate))).astype(np.float32)
             for _ in range(batch_size)]
    for _ in range(warmup):
        run_batch(loaded, clips, all_layers)
    times_ms = []
    for _ in range(repeats):
        started = time.perf_counter()
        run_batch(loaded, clips, all_layers)
        times_ms.append((time.perf_counter() - started) * 1000.0)
    return {"seconds": seconds, "batch_size": batch_size, "repeats": repeats,
            "p50_ms": statistics.median(times_ms), "min_ms": min(times_ms),
            "max_ms": max(times_ms)}
