"""Wav2Vec2 base shape on a CUDA GPU: one prepared run for a machine that has one.

The same figures as ``bench.wav2vec2`` takes on the CPU, on device "cuda":
in this process (the floor: the service class called directly), batch 1 and
batch 8, 1 s and 10 s of audio; then through the runtime, started with the
spawn start method (CUDA cannot start in a forked process), route_task latency
for 1 s and 10 s of audio, and 8 concurrent callers with batching on
(max_batch_size 8, 5 ms) and off. The checkpoint is the base shape with random
weights, built locally (nothing is downloaded). Writes
``bench/results/wav2vec2_cuda.json`` with the GPU's name and torch's version.

Run, on a machine with a GPU:   python -m bench.cuda_wav2vec2 [--quick]
(about 3 minutes on an H100, most of it the spawned service's start; --quick: fewer repeats).
Exit status 2 where torch sees no CUDA device: nothing is measured.
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from messages import Task

from .stats import print_table, time_calls, write_results
from .wav2vec2 import checkpoint, clip, service_settings, throughput

DEVICE = "cuda"


def in_process(folder, reps_1s: int, reps_10s: int) -> tuple[dict[str, Any], float]:
    """The service class on the GPU in this process: batch 1 and 8, 1 s and 10 s."""
    from messages.validation import build_settings
    from services.registry import load_kind
    cls = load_kind("wav2vec2")
    settings = build_settings(cls.Settings, {"model": str(folder), "local_files_only": True,
                                             "device": DEVICE, "max_audio_seconds": 30}, "bench")
    service = cls("bench", settings)
    started = time.perf_counter()
    service.initialize()
    load_s = time.perf_counter() - started
    rows = {}
    for seconds, reps in ((1.0, reps_1s), (10.0, reps_10s)):
        for batch in (1, 8):
            tasks = [Task(id=f"b{i}", type="speech-to-text", data={"audio": clip(seconds, i)})
                     for i in range(batch)]
            # Results come back as numpy arrays: each call waits for the GPU to finish.
            rows[f"in-process, batch {batch}, {seconds:g} s audio"] = time_calls(
                lambda i: service.execute_batch(tasks), reps, warmup=3)
    service.shutdown()
    return rows, load_s


def through_runtime(folder, reps_1s: int, reps_10s: int, per_caller: int) -> dict[str, Any]:
    from host import ServiceSystem

    def on_gpu(batch: int, delay_ms: float) -> dict[str, Any]:
        return {**service_settings(folder, batch, delay_ms), "device": DEVICE}

    config = {"system": {"start_method": "spawn", "start_timeout_s": 300},
              "services": {"asr": on_gpu(8, 5.0), "asr_unbatched": on_gpu(1, 0.0)},
              "routes": {t: "asr_unbatched" for t in ("speech-to-text", "audio-feature-extraction",
                                                      "audio_process", "audio_analyze")}}
    audio_1, audio_10 = clip(1.0), clip(10.0)
    started = time.perf_counter()
    with ServiceSystem.start(config, timeout=300) as system:
        start_s = time.perf_counter() - started
        rows = {
            "route_task, batch 1, 1 s audio": time_calls(lambda i: system.router.route_task(Task(
                id=f"l1-{i}", type="speech-to-text", data={"audio": audio_1})).unwrap(),
                reps_1s, warmup=3),
            "route_task, batch 1, 10 s audio": time_calls(lambda i: system.router.route_task(Task(
                id=f"l10-{i}", type="speech-to-text", data={"audio": audio_10})).unwrap(),
                reps_10s, warmup=2),
            "8 callers, batching on (8, 5 ms)": throughput(system, "asr", 8, per_caller),
            "8 callers, max_batch_size=1": throughput(system, "asr_unbatched", 8, per_caller),
        }
        described = next(s for s in system.services() if s.name == "asr")
    return {"rows": rows, "system_start_s": start_s, "service_pid": described.pid}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cuda_wav2vec2",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        print("torch sees no CUDA device: nothing measured (run this where there is a GPU)",
              file=sys.stderr)
        return 2
    reps_1s, reps_10s, per_caller = (20, 5, 4) if args.quick else (100, 30, 16)
    folder = checkpoint("base")
    results: dict[str, Any] = {"device": torch.cuda.get_device_name(0),
                               "torch": torch.__version__, "cuda": torch.version.cuda}
    rows, load_s = in_process(folder, reps_1s, reps_10s)
    results["in_process"], results["in_process_load_s"] = rows, load_s
    print_table(f"wav2vec2 base on {results['device']}: in this process", rows)
    runtime = through_runtime(folder, reps_1s, reps_10s, per_caller)
    results["runtime"] = runtime
    print_table(f"wav2vec2 base on {results['device']}: through the runtime (spawn)",
                runtime["rows"])
    print(f"load in process {load_s:.2f} s; runtime start (spawn, model on the GPU) "
          f"{runtime['system_start_s']:.1f} s")
    print(f"\nresults: {write_results('wav2vec2_cuda', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
