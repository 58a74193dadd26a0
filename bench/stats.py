"""Percentiles, timing loops and the printed table every benchmark shares."""
from __future__ import annotations

import json
import platform
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def summarize(samples_ms: list[float], wall_s: float | None = None) -> dict[str, float]:
    values = np.asarray(samples_ms, dtype=float)
    out = {"n": int(values.size), "p50_ms": float(np.percentile(values, 50)),
           "p99_ms": float(np.percentile(values, 99)), "mean_ms": float(values.mean())}
    if wall_s:
        out["per_s"] = values.size / wall_s
    return out


def time_calls(call: Callable[[int], Any], n: int, warmup: int = 50) -> dict[str, float]:
    """Run ``call(i)`` n times on this thread; latency in ms per call."""
    for i in range(warmup):
        call(-1 - i)
    samples = []
    started = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        call(i)
        samples.append((time.perf_counter() - t0) * 1000)
    return summarize(samples, time.perf_counter() - started)


def concurrent_calls(call: Callable[[int, int], Any], callers: int,
                     per_caller: int) -> tuple[dict[str, float], list[Any]]:
    """``call(caller, i)`` from ``callers`` threads at once: latency summary with
    throughput over the whole run, and every call's return value."""
    samples: list[float] = []
    values: list[Any] = []
    lock = threading.Lock()

    def caller(n: int) -> None:
        for i in range(per_caller):
            t0 = time.perf_counter()
            value = call(n, i)
            with lock:
                samples.append((time.perf_counter() - t0) * 1000)
                values.append(value)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summarize(samples, time.perf_counter() - started), values


def print_goals(title: str, goals: dict[str, dict[str, Any]]) -> None:
    """An issue's goal table as this run measured it: each figure's value (None: not
    reached), its "before" where it has one, the goal and whether it was met."""
    print(f"\n## {title}")
    for name, g in goals.items():
        value = "not reached" if g["value"] is None else f"{g['value']:.2f}"
        before = "" if g.get("before") is None else f" (before: {g['before']:.2f})"
        print(f"{name}: {value}{before}; goal {g['goal']}; met: {g['met']}")


def print_table(title: str, rows: dict[str, dict[str, float]], floor: str | None = None) -> None:
    print(f"\n## {title}")
    print(f"{'figure':<44} {'p50 ms':>9} {'p99 ms':>9} {'per s':>9} {'p50 - floor':>12}")
    base = rows.get(floor, {}).get("p50_ms") if floor else None
    for name, r in rows.items():
        if "p50_ms" not in r:
            continue
        extra = f"{r['p50_ms'] - base:>12.3f}" if base is not None and name != floor else ""
        per_s = f"{r['per_s']:>9.0f}" if "per_s" in r else f"{'':>9}"
        print(f"{name:<44} {r['p50_ms']:>9.3f} {r['p99_ms']:>9.3f} {per_s} {extra}")


def write_results(name: str, results: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    meta = {"machine": platform.machine(), "python": platform.python_version(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path.write_text(json.dumps({"meta": meta, **results}, indent=2, default=str))
    return path
