"""Wav2Vec2 through the runtime against the same model in this process.

For the tiny and the base-shape checkpoint (random weights, built locally):
load time, end-to-end latency through the router for 1 s and 10 s audio
beside the in-process service time measured in the same run, throughput of
8 concurrent callers with batching on and off, restart time after kill -9,
and the service's RSS; and the resampler alone (10 s of 44.1 and 22.05 kHz
audio to 16 kHz), the part of reading a task that grows with its length.

Run: python -m bench wav2vec2 [--quick]   (--quick: tiny only, fewer repeats)
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from messages import Task
from host import ServiceSystem

from .stats import concurrent_calls, print_table, summarize, time_calls, write_results

MODEL_ROOT = Path("var/models")
TORCH_THREADS = 2


def checkpoint(size: str) -> Path:
    from services.wav2vec2.checkpoint import make_checkpoint
    folder = MODEL_ROOT / f"wav2vec2-{size}"
    if not (folder / "config.json").exists():
        make_checkpoint(folder, size)
    return folder


def clip(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)


def service_settings(folder: Path, batch: int, delay_ms: float) -> dict[str, Any]:
    return {"kind": "wav2vec2", "eager": True, "model": str(folder), "local_files_only": True,
            "torch_threads": TORCH_THREADS, "max_batch_size": batch,
            "max_batch_delay_ms": delay_ms, "max_queue": 64, "fetch_context": False,
            "max_audio_seconds": 30, "task_timeout_s": 120}


def in_process_service(folder: Path) -> tuple[Any, float]:
    """The same service class, in this process and initialized; its load time in s."""
    import torch

    from messages.validation import build_settings
    from services.registry import load_kind
    cls = load_kind("wav2vec2")
    settings = build_settings(cls.Settings, {k: v for k, v in service_settings(folder, 1, 0).items()
                                             if k in {"model", "local_files_only", "torch_threads",
                                                      "max_audio_seconds"}}, "bench")
    service = cls("bench", settings)
    started = time.perf_counter()
    service.initialize()
    load_s = time.perf_counter() - started
    torch.set_num_threads(TORCH_THREADS)
    return service, load_s


def in_process(folder: Path, seconds: float, n: int) -> tuple[dict[str, float], float]:
    """The same service class, called directly: the time the runtime cannot remove."""
    service, load_s = in_process_service(folder)
    task = Task(id="bare", type="speech-to-text", data={"audio": clip(seconds)})
    stats = time_calls(lambda i: service.execute_batch([task]), n, warmup=2)
    service.shutdown()
    return stats, load_s


def throughput(system: ServiceSystem, service: str, callers: int, per_caller: int) -> dict[str, float]:
    handle = system.get_service(service)
    audio = clip(1.0)

    def call(n: int, i: int) -> int:
        result = handle.execute_task(Task(id=f"{service}-{n}-{i}", type="speech-to-text",
                                          data={"audio": audio}))
        result.unwrap()
        return result.metrics.batch_size

    out, batch_sizes = concurrent_calls(call, callers, per_caller)
    out["mean_batch_size"] = float(np.mean(batch_sizes))
    return out


def restart_after_kill(system: ServiceSystem, service: str, reps: int) -> dict[str, float]:
    samples = []
    audio = clip(1.0)
    for rep in range(reps):
        pid = next(s.pid for s in system.services() if s.name == service)
        os.kill(pid, signal.SIGKILL)
        killed = time.perf_counter()
        attempt = 0
        while not system.router.route_task(Task(id=f"kill-{rep}-{attempt}", type="speech-to-text",
                                                data={"audio": audio})).ok:
            attempt += 1
            time.sleep(0.002)
        samples.append((time.perf_counter() - killed) * 1000)
        time.sleep(0.5)
    return summarize(samples)


def run_size(size: str, quick: bool) -> dict[str, Any]:
    folder = checkpoint(size)
    reps_1s, reps_10s = (20, 4) if quick else ((60, 12) if size == "tiny" else (30, 8))
    results: dict[str, Any] = {"size": size}
    bare_1, load_s = in_process(folder, 1.0, reps_1s)
    bare_10, _ = in_process(folder, 10.0, reps_10s)
    results["in_process_load_s"] = load_s
    config = {"services": {"asr": service_settings(folder, 8, 5.0),
                           "asr_unbatched": service_settings(folder, 1, 0.0),
                           "asr_latency": service_settings(folder, 8, 0.0)},
              # Three services of one kind serve the same task types: routed to one.
              "routes": {t: "asr_latency" for t in ("speech-to-text", "audio-feature-extraction",
                                                    "audio_process", "audio_analyze")}}
    audio_1, audio_10 = clip(1.0), clip(10.0)  # made once, as the in-process runs do
    started = time.perf_counter()
    with ServiceSystem.start(config) as system:
        results["system_start_s"] = time.perf_counter() - started
        rows = {
            "in-process service, 1 s audio": bare_1,
            "route_task, 1 s audio": time_calls(lambda i: system.router.route_task(Task(
                id=f"l1-{i}", type="speech-to-text", data={"audio": audio_1})).unwrap(),
                reps_1s, warmup=3),
            "in-process service, 10 s audio": bare_10,
            "route_task, 10 s audio": time_calls(lambda i: system.router.route_task(Task(
                id=f"l10-{i}", type="speech-to-text", data={"audio": audio_10})).unwrap(),
                reps_10s, warmup=1),
        }
        per_caller = 3 if quick else (10 if size == "tiny" else 4)
        rows["8 callers, batching on (8, 5 ms)"] = throughput(system, "asr", 8, per_caller)
        rows["8 callers, max_batch_size=1"] = throughput(system, "asr_unbatched", 8, per_caller)
        rows["kill -9 -> next success"] = restart_after_kill(system, "asr_latency", 2 if quick else 3)
        rss = {m.name: m.rss_bytes for m in system.metrics()}
    results["rows"] = rows
    results["rss_bytes"] = rss
    results["overhead_1s_pct"] = 100 * (rows["route_task, 1 s audio"]["p50_ms"] / bare_1["p50_ms"] - 1)
    results["overhead_10s_pct"] = 100 * (rows["route_task, 10 s audio"]["p50_ms"] / bare_10["p50_ms"] - 1)
    print_table(f"wav2vec2 {size}: latency, throughput, recovery", rows)
    print(f"in-process load {load_s:.3f} s; runtime start {results['system_start_s']:.2f} s; "
          f"messaging overhead p50: 1 s audio {results['overhead_1s_pct']:+.1f} %, "
          f"10 s audio {results['overhead_10s_pct']:+.1f} %; "
          f"RSS MB: {', '.join(f'{k} {v / 1e6:.0f}' for k, v in rss.items())}")
    return results


def resampling(quick: bool) -> dict[str, dict[str, float]]:
    """The service's resample (soxr HQ) on 10 s of float64 audio, as it is called per task."""
    from services.wav2vec2.audio import resample
    rows = {}
    for rate in (44_100, 22_050):
        audio = np.random.default_rng(0).standard_normal(10 * rate)
        rows[f"resample 10 s, {rate / 1000:g} kHz -> 16 kHz"] = time_calls(
            lambda i: resample(audio, rate, 16_000), 50 if quick else 300, warmup=5)
    print_table("wav2vec2: resampling to the model's 16 kHz (soxr HQ)", rows)
    return rows


def run(quick: bool = False) -> dict[str, Any]:
    sizes = ["tiny"] if quick else ["tiny", "base"]
    results: dict[str, Any] = {"resampling": resampling(quick)}
    results.update({size: run_size(size, quick) for size in sizes})
    path = write_results("wav2vec2", results)
    print(f"\nresults: {path}")
    return results
