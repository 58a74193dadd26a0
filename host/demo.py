"""``python run.py demo``: the runtime on its embedded default, end to end.

It builds a tiny random-weight Wav2Vec2 checkpoint (nothing is downloaded),
starts the runtime with an echo and a wav2vec2 service, runs every task type
through the router with shared context, batches concurrent callers, kills the
model's process with -9 and shows the supervisor bring it back, prints the
services' figures, and shuts everything down.
"""
from __future__ import annotations

import argparse
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np

from messages import Task
from messages.context import ContextItem
from services.wav2vec2.checkpoint import RANDOM_WEIGHTS_MARKER

from .system import ServiceSystem

DEFAULT_MODEL_DIR = Path("var/models/wav2vec2-tiny")


def demo_config(model_dir: Path, port: int | None) -> dict:
    return {
        "system": {"admin_port": port} if port else {},  # none: a free one
        "services": {
            "echo": {"kind": "echo", "eager": True},
            "wav2vec2": {"kind": "wav2vec2", "eager": True, "model": str(model_dir),
                         "local_files_only": True, "torch_threads": 1, "max_batch_size": 8,
                         "max_batch_delay_ms": 5, "max_queue": 64},
        },
    }


def spoken_like(seconds: float, rate: int = 16000) -> np.ndarray:
    """Two bursts of harmonic sound around a pause: speech-shaped, not speech."""
    t = np.arange(int(seconds * rate)) / rate
    voiced = np.sin(2 * np.pi * 140 * t) + 0.5 * np.sin(2 * np.pi * 280 * t)
    envelope = ((t % 1.0) < 0.4).astype(np.float32)
    return (0.3 * voiced * envelope).astype(np.float32)


def step(title: str) -> None:
    print(f"\n== {title}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run.py demo", description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR,
                        help="a wav2vec2 checkpoint folder (built with random weights if missing)")
    parser.add_argument("--port", type=int, default=None, help="admin port (default: a free one)")
    args = parser.parse_args(argv)

    if not (args.model / "config.json").exists():
        from services.wav2vec2.checkpoint import make_checkpoint
        make_checkpoint(args.model, "tiny")
        print(f"built a tiny random-weight wav2vec2 checkpoint in {args.model}")
    started = time.perf_counter()
    with ServiceSystem.start(demo_config(args.model, args.port)) as system:
        print(f"runtime ready in {time.perf_counter() - started:.2f} s "
              f"(admin port {system.admin_port}, loopback only)")
        if (args.model / RANDOM_WEIGHTS_MARKER).exists():
            print("NOTE: this wav2vec2 checkpoint has RANDOM WEIGHTS: the text it prints is "
                  "noise; the timings, batching, context and recovery are real.")

        step("echo service, through its handle")
        echo = system.get_service("echo")
        print(echo.execute_task(Task(id="hello", type="echo", data=b"hello")).unwrap())

        step("shared context: the host stores audio parameters, the router fetches them")
        system.context.store(ContextItem(type="audio_parameters", source="demo",
                                         content={"sample_rate": 16000, "language": "en"}))
        print(system.context.get_context_for_model("wav2vec2"))

        audio = spoken_like(2.0)
        for task_type, data in [
            ("speech-to-text", {"audio": audio}),
            ("audio-feature-extraction", {"audio": audio}),
            ("audio_analyze", {"audio": audio, "analysis_type": "patterns"}),
        ]:
            step(task_type)
            result = system.router.route_task(Task(id=f"demo-{task_type}", type=task_type,
                                                   data=data, store_results=True))
            _show(result)

        step("bad input gets a typed error, not a crash")
        bad = system.router.route_task(Task(id="bad", type="speech-to-text",
                                            data={"audio": np.full(16000, np.nan, np.float32)}))
        print(f"{bad.error.code.value}: {bad.error.message}")

        step("8 concurrent callers: the service batches them")
        results = []
        threads = [threading.Thread(target=lambda i=i: results.append(system.router.route_task(
            Task(id=f"c{i}", type="speech-to-text", data={"audio": spoken_like(1.0)}))))
            for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        sizes = sorted(r.metrics.batch_size for r in results)
        print(f"{sum(r.ok for r in results)}/8 answered; batch sizes seen: {sizes}")

        step("kill -9 the wav2vec2 process; the supervisor brings it back")
        pid = next(s.pid for s in system.services() if s.name == "wav2vec2")
        os.kill(pid, signal.SIGKILL)
        killed = time.perf_counter()
        attempt = 0
        while not (r := system.router.route_task(Task(id=f"after-kill-{attempt}", type="speech-to-text",
                                                      data={"audio": audio}))).ok:
            print(f"  meanwhile: {r.error.code.value}: {r.error.message}") if attempt < 3 else None
            attempt += 1
            time.sleep(0.005)
        print(f"killed pid {pid}; next successful task {1000 * (time.perf_counter() - killed):.0f} ms "
              f"later, on pid {next(s.pid for s in system.services() if s.name == 'wav2vec2')}")
        for event in system.health.events()[-2:]:
            print(f"health event: {event.kind.value} {event.service}: {event.reason}")

        step("services")
        _status_table(system)
    print("\nshut down: every process of the runtime has ended")
    return 0


def _show(result) -> None:
    if not result.ok:
        print(f"{result.error.code.value}: {result.error.message}")
        return
    data = {k: (f"array{tuple(v.shape)}" if isinstance(v, np.ndarray) else v)
            for k, v in result.data.items() if k not in ("token_ids", "words")}
    print(data)
    m = result.metrics
    print(f"timings ms: total {m.total_ms:.1f} = routing {m.routing_ms:.1f} + context "
          f"{m.context_fetch_ms:.1f} + queue {m.queue_ms:.1f} + compute {m.execution_ms:.1f}")


def _status_table(system: ServiceSystem) -> None:
    infos = {s.name: s for s in system.services()}
    print(f"{'service':<10} {'status':<9} {'restarts':>8} {'requests':>8} {'errors':>6} "
          f"{'p50 ms':>8} {'p99 ms':>8} {'RSS MB':>8}")
    for m in system.metrics():
        info = infos[m.name]
        print(f"{m.name:<10} {info.status.value:<9} {m.restarts:>8} {m.requests:>8} {m.errors:>6} "
              f"{m.latency_p50_ms:>8.1f} {m.latency_p99_ms:>8.1f} {m.rss_bytes / 1e6:>8.0f}")
