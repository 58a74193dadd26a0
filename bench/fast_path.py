"""Issue 14's goal figures, each beside the floor measured in the same run.

- Throughput by callers (1, 2, 4, 8, 16): route_task with echo (no context) from
  that many host threads, beside the floor, a bare Thespian actor asked from as
  many threads (each its own endpoint), and beside the path every task took
  before: a Task sent to the router (still the way in for external actors).
- Latency from one thread: route_task without and with context (the host's copy
  of the context), the router's path, a bare ask.
- The tiny Wav2Vec2: end to end minus the same service in-process, for 1 s and
  10 s of audio, through shared memory and pickled, and through the router; the
  mean batch with 8 callers, and p50 at 1 caller with and without batching.

Run: python -m bench fast_path [--quick]
"""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np

from host import ServiceSystem
from messages import Task, TaskResult

from .floor import Ping
from .stats import concurrent_calls, print_goals, print_table, summarize, write_results
from .wav2vec2 import checkpoint, clip, in_process_service, service_settings

CALLERS = (1, 2, 4, 8, 16)


class Endpoints:
    """One private endpoint per thread (threads sharing one get each other's replies)."""

    def __init__(self, system: ServiceSystem):
        self._system, self._local, self._open = system, threading.local(), []

    def __call__(self) -> Any:
        endpoint = getattr(self._local, "endpoint", None)
        if endpoint is None:
            manager = self._system.open_endpoint()
            endpoint = self._local.endpoint = manager.__enter__()
            self._open.append(manager)
        return endpoint

    def close(self) -> None:
        for manager in self._open:
            manager.__exit__(None, None, None)


def echo_config() -> dict[str, Any]:
    return {"services": {
        "echo_plain": {"kind": "echo", "eager": True, "max_queue": 4096, "fetch_context": False},
        "echo": {"kind": "echo", "eager": True, "max_queue": 4096}},
        "routes": {"echo-plain": "echo_plain", "echo": "echo"}}


def echo_figures(quick: bool) -> dict[str, Any]:
    n = 400 if quick else 2000
    payload = {"text": "x" * 64}
    with ServiceSystem.start(echo_config()) as system, system.open_endpoint() as main:
        endpoints = Endpoints(system)
        ping, router = main.createActor(Ping), system.info.router  # Ping's creator stays open
        paths: dict[str, Callable[[int, int], Any]] = {
            "thespian ask (floor)": lambda c, i: endpoints().ask(ping, payload, 10),
            "route_task": lambda c, i: system.router.route_task(
                Task(id=f"r{c}-{i}", type="echo-plain", data=payload)).unwrap(),
            "Task to the router (before; external actors)": lambda c, i: endpoints().ask(
                router, Task(id=f"x{c}-{i}-{time.monotonic_ns()}", type="echo-plain",
                             data=payload), 30).unwrap(),
        }
        throughput: dict[str, dict[str, dict[str, float]]] = {name: {} for name in paths}
        for callers in CALLERS:  # side by side, so drift hits every path alike
            for name, call in paths.items():
                slow = name.startswith("Task to the router")
                throughput[name][str(callers)] = concurrent_calls(
                    call, callers, max(20, (n // 4 if slow else n) // callers))[0]
        single = {
            "thespian ask (floor)": lambda i: main.ask(ping, payload, 10),
            "route_task, no context": lambda i: system.router.route_task(
                Task(id=f"p{i}", type="echo-plain", data=payload)).unwrap(),
            "route_task, with context": lambda i: system.router.route_task(
                Task(id=f"c{i}", type="echo", data=payload)).unwrap(),
            "Task to the router, no context (before)": lambda i: main.ask(
                router, Task(id=f"q{i}", type="echo-plain", data=payload), 10).unwrap(),
            "Task to the router, with context (before)": lambda i: main.ask(
                router, Task(id=f"w{i}", type="echo", data=payload), 10).unwrap(),
        }
        latency = {name: summarize(v) for name, v in interleaved(single, n // 2).items()}
        direct = system._direct.sent
        endpoints.close()
    return {"throughput": throughput, "latency": latency, "direct_tasks": direct}


def interleaved(calls: dict[str, Callable[[int], Any]], n: int, warmup: int = 20,
                beside_model: dict[str, list[float]] | None = None) -> dict[str, list[float]]:
    """Each call once in turn, n times (ms each): drift on a busy machine hits every
    figure alike, and call i of one path can be paired with call i of another.
    ``beside_model`` gets, for calls that return a TaskResult, the wall time minus the
    model's own (``execution_ms``): what the runtime adds, whatever the model took."""
    samples: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for i in range(-warmup, n):
        # The order turns each time: a call right after another pays for what that one
        # left running (torch's threads spin on for a while after a forward pass).
        for name in names[i % len(names):] + names[:i % len(names)]:
            call = calls[name]
            t0 = time.perf_counter()
            out = call(i)
            wall = (time.perf_counter() - t0) * 1000
            if i >= 0:
                samples[name].append(wall)
                if beside_model is not None and isinstance(out, TaskResult):
                    beside_model.setdefault(name, []).append(wall - out.metrics.execution_ms)
    return samples


def wav2vec2_figures(quick: bool) -> dict[str, Any]:
    """Each path timed in turn with the same service in this process, call by call, so
    that drift on a busy machine hits them alike; "over" is the median of the paired
    differences (a path's call minus the in-process call of the same round)."""
    folder = checkpoint("tiny")
    reps = {"1 s": 40 if quick else 200, "10 s": 15 if quick else 60}
    bare, _ = in_process_service(folder)
    config = {"services": {"asr": service_settings(folder, 8, 5.0),
                           "asr_unbatched": service_settings(folder, 1, 0.0)},
              "routes": {t: "asr" for t in ("speech-to-text", "audio-feature-extraction",
                                            "audio_process", "audio_analyze")}}
    audio = {"1 s": clip(1.0), "10 s": clip(10.0)}
    rows: dict[str, dict[str, float]] = {}
    over: dict[str, float] = {}
    runtime_ms: dict[str, list[float]] = {}
    with ServiceSystem.start(config) as system:
        endpoints = Endpoints(system)
        router, pool = system.info.router, system._segments
        full = pool.max_bytes

        def route_task(tag: str, seconds: str, shared: bool) -> Callable[[int], Any]:
            def call(i: int) -> Any:
                pool.max_bytes = full if shared else 0  # 0: every array travels pickled
                result = system.router.route_task(Task(
                    id=f"{tag}{seconds}{i}", type="speech-to-text", data={"audio": audio[seconds]}))
                result.unwrap()
                return result
            return call

        for seconds in ("1 s", "10 s"):
            task = Task(id="bare", type="speech-to-text", data={"audio": audio[seconds]})
            paths = {
                f"in-process, {seconds}": lambda i, t=task: bare.execute_batch([t]),
                f"route_task, {seconds}": route_task("s", seconds, True),
                f"route_task pickled, {seconds}": route_task("p", seconds, False),
                f"Task to the router, {seconds} (before)": lambda i, s=seconds: endpoints().ask(
                    router, Task(id=f"b{s}{i}", type="speech-to-text", data={"audio": audio[s]}),
                    30),
            }
            samples = interleaved(paths, reps[seconds], warmup=3, beside_model=runtime_ms)
            pool.max_bytes = full
            rows.update({name: summarize(v) for name, v in samples.items()})
            base = samples[f"in-process, {seconds}"]
            for name in paths:
                if not name.startswith("in-process"):
                    over[name] = float(np.median(np.subtract(samples[name], base)))
        per_caller = 10 if quick else 40
        handles = {name: system.get_service(name) for name in ("asr", "asr_unbatched")}

        def one(name: str, tag: str) -> Callable[..., int]:
            def call(*at: int) -> int:
                r = handles[name].execute_task(Task(id=f"{name}{tag}-{at}", type="speech-to-text",
                                                    data={"audio": audio["1 s"]}))
                r.unwrap()
                return r.metrics.batch_size
            return call

        # One caller: the two services in turn, call by call (a lone task must not wait).
        lone = interleaved({f"{name}, 1 callers": one(name, "l") for name in handles},
                           3 * per_caller, warmup=3)
        batch: dict[str, Any] = {name: summarize(v) for name, v in lone.items()}
        for name in handles:
            out, sizes = concurrent_calls(one(name, "c"), 8, per_caller)
            out["mean_batch_size"] = float(np.mean(sizes))
            batch[f"{name}, 8 callers"] = out
        endpoints.close()
    bare.shutdown()
    return {"rows": rows, "over_in_process_ms": over, "batching": batch,
            "runtime_ms": {name: summarize(v) for name, v in runtime_ms.items()}}


def goals(echo: dict[str, Any], w2v: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's goal table, from this run's figures."""
    t, lat = echo["throughput"], echo["latency"]
    floor16 = t["thespian ask (floor)"]["16"]["per_s"]
    b, paired = w2v["batching"], w2v["over_in_process_ms"]
    over = {s: paired[f"route_task, {s}"] for s in ("1 s", "10 s")}
    return {
        "routed echo tasks/s at 16 callers / bare actor's asks/s from 16 threads": {
            "value": t["route_task"]["16"]["per_s"] / floor16, "goal": ">= 0.5 (stretch 0.7)",
            "before": t["Task to the router (before; external actors)"]["16"]["per_s"] / floor16,
            "met": t["route_task"]["16"]["per_s"] / floor16 >= 0.5},
        "route_task tasks/s, 4 callers / 1 caller": {
            "value": t["route_task"]["4"]["per_s"] / t["route_task"]["1"]["per_s"], "goal": "> 1",
            "before": t["Task to the router (before; external actors)"]["4"]["per_s"]
            / t["Task to the router (before; external actors)"]["1"]["per_s"],
            "met": t["route_task"]["4"]["per_s"] > t["route_task"]["1"]["per_s"]},
        "route_task p50, no context / bare ask": {
            "value": lat["route_task, no context"]["p50_ms"] / lat["thespian ask (floor)"]["p50_ms"],
            "goal": "<= 2",
            "before": lat["Task to the router, no context (before)"]["p50_ms"]
            / lat["thespian ask (floor)"]["p50_ms"],
            "met": lat["route_task, no context"]["p50_ms"]
            <= 2 * lat["thespian ask (floor)"]["p50_ms"]},
        "route_task p50 with context / without": {
            "value": lat["route_task, with context"]["p50_ms"] / lat["route_task, no context"]["p50_ms"],
            "goal": "<= 1.15",
            "before": lat["Task to the router, with context (before)"]["p50_ms"]
            / lat["Task to the router, no context (before)"]["p50_ms"],
            "met": lat["route_task, with context"]["p50_ms"]
            <= 1.15 * lat["route_task, no context"]["p50_ms"]},
        "tiny model end to end minus in-process, 1 s audio (ms)": {
            "value": over["1 s"], "goal": "<= 1.5",
            "before": paired["Task to the router, 1 s (before)"], "met": over["1 s"] <= 1.5},
        "tiny model end to end minus in-process, 10 s audio (ms)": {
            "value": over["10 s"], "goal": "<= 1.5",
            "before": paired["Task to the router, 10 s (before)"], "met": over["10 s"] <= 1.5},
        "tiny model, what the runtime adds (wall - execution_ms), 1 s audio (ms)": {
            "value": w2v["runtime_ms"]["route_task, 1 s"]["p50_ms"], "goal": "<= 1.5",
            "before": w2v["runtime_ms"]["Task to the router, 1 s (before)"]["p50_ms"],
            "met": w2v["runtime_ms"]["route_task, 1 s"]["p50_ms"] <= 1.5},
        "tiny model, what the runtime adds (wall - execution_ms), 10 s audio (ms)": {
            "value": w2v["runtime_ms"]["route_task, 10 s"]["p50_ms"], "goal": "<= 1.5",
            "before": w2v["runtime_ms"]["Task to the router, 10 s (before)"]["p50_ms"],
            "met": w2v["runtime_ms"]["route_task, 10 s"]["p50_ms"] <= 1.5},
        "mean batch, tiny model, 8 callers": {
            "value": b["asr, 8 callers"]["mean_batch_size"], "goal": ">= 5", "before": 3.7,
            "met": b["asr, 8 callers"]["mean_batch_size"] >= 5},
        "p50 at 1 caller, batching on (8, 5 ms) / max_batch_size=1": {
            "value": b["asr, 1 callers"]["p50_ms"] / b["asr_unbatched, 1 callers"]["p50_ms"],
            "goal": "<= 1.1 (a lone task does not wait out the delay)", "before": None,
            "met": b["asr, 1 callers"]["p50_ms"] <= 1.1 * b["asr_unbatched, 1 callers"]["p50_ms"]},
    }


def run(quick: bool = False) -> dict[str, Any]:
    echo = echo_figures(quick)
    w2v = wav2vec2_figures(quick)
    for name, by_callers in echo["throughput"].items():
        print_table(f"fast path: {name}, tasks/s by callers",
                    {f"{c} callers": r for c, r in by_callers.items()})
    print_table("fast path: one thread", echo["latency"], floor="thespian ask (floor)")
    print_table("fast path: tiny wav2vec2", w2v["rows"])
    print("end to end minus in-process, median of paired calls (ms): "
          + ", ".join(f"{k} {v:+.2f}" for k, v in w2v["over_in_process_ms"].items()))
    print_table("fast path: tiny wav2vec2, wall time minus the model's execution_ms",
                w2v["runtime_ms"])
    print_table("fast path: tiny wav2vec2 batching (1 s audio)", w2v["batching"])
    table = goals(echo, w2v)
    print_goals("issue 14 goals (this run)", table)
    results = {"echo": echo, "wav2vec2": w2v, "goals": table}
    path = write_results("fast_path", results)
    print(f"\nresults: {path}")
    return results
