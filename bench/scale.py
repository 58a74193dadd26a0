"""Issue 15's goal figures: replicas and autoscaling, beside the floor measured in the same run.

- Replicas: echo with ``delay_ms = 20`` from 16 host threads (``route_task``), with
  ``replicas = 1`` and ``replicas = 4``: tasks/s and p50/p99 per task, beside the floor,
  a bare Thespian actor asked from 16 threads. Both services run in one runtime, each
  reached by its own task type, and are measured in alternating rounds: one start, one
  floor for both, and drift on a busy machine hits both alike (the idle one's processes
  only answer heartbeats).
- Autoscaling: a load ramp on an autoscaled echo (min 1, max 4, target 2 ongoing tasks
  per replica): idle, then 16 callers, then idle until it is back to 1 replica, sampled
  every 0.2 s (replicas that accept tasks, callers, tasks done per second); the seconds
  to 4 replicas and back to 1, the failed tasks and the autoscaler's decisions (its
  ``service_scaled`` health events). bench.report draws the timeline (autoscaling.png).

Run: python -m bench scale [--quick]
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any

import numpy as np

from host import ServiceSystem
from messages import Task
from messages.system import HealthEventKind

from .fast_path import Endpoints
from .floor import Ping
from .stats import concurrent_calls, print_goals, print_table, summarize, write_results

CALLERS = 16
DELAY_MS = 20
FLOOR = "thespian ask (floor), 16 threads"
AUTOSCALING = {"min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2,
               "upscale_delay_s": 0.5, "downscale_delay_s": 5.0, "look_back_period_s": 1.0}
HEARTBEAT_S = 0.2
SAMPLE_S = 0.2
GIVE_UP_S = 40.0


def echo(**extra: Any) -> dict[str, Any]:
    return {"kind": "echo", "eager": True, "delay_ms": DELAY_MS, "max_queue": 4096,
            "fetch_context": False, **extra}


def replica_figures(quick: bool) -> dict[str, Any]:
    """16 callers on replicas = 1 and replicas = 4, in alternating rounds, and the floor.
    Beside each: the replicas' own time per task (execution_ms), and the time per task
    that a replica's worker stood idle (replicas / tasks per s - execution): what the
    runtime costs a replica between two tasks, which bounds the ratio."""
    rounds, per_caller = (1, 8) if quick else (3, 10)
    count = {"replicas = 1": 1, "replicas = 4": 4}
    config = {"services": {"echo_one": echo(replicas=1), "echo_four": echo(replicas=4)},
              # both serve "echo" by default: the config must say which one does
              "routes": {"echo-1": "echo_one", "echo-4": "echo_four", "echo": "echo_one"}}
    payload = {"text": "x" * 64}
    samples: dict[str, list[float]] = {}
    results: dict[str, list[Any]] = {}
    wall: dict[str, float] = {}
    load = [os.getloadavg()[0]]
    with ServiceSystem.start(config) as system, system.open_endpoint() as main:
        endpoints = Endpoints(system)
        ping = main.createActor(Ping)  # its creator stays open while the floor is asked
        paths = {
            FLOOR: lambda c, i: endpoints().ask(ping, payload, 10),
            "replicas = 1": lambda c, i: system.router.route_task(
                Task(id=f"a{c}-{i}-{time.monotonic_ns()}", type="echo-1", data=payload)),
            "replicas = 4": lambda c, i: system.router.route_task(
                Task(id=f"b{c}-{i}-{time.monotonic_ns()}", type="echo-4", data=payload)),
        }
        for name, call in paths.items():  # warm-up: every replica's connection is open
            concurrent_calls(call, CALLERS, 2)
        for _ in range(rounds):
            for name, call in paths.items():
                # each round of each path lasts about as long (the floor is ~10x faster)
                n = per_caller * count.get(name, 10)
                started = time.perf_counter()
                out, values = _timed(call, n)
                wall[name] = wall.get(name, 0.0) + time.perf_counter() - started
                samples.setdefault(name, []).extend(out)
                results.setdefault(name, []).extend(values)
        served = {m.name: m.requests for m in system.metrics()}
        endpoints.close()
    load.append(os.getloadavg()[0])
    rows = {name: summarize(v, wall[name]) for name, v in samples.items()}
    failed = sum(r is None for r in results[FLOOR]) + sum(
        not r.ok for name in count for r in results[name])
    at_replica = {}
    for name, replicas in count.items():
        execution = float(np.mean([r.metrics.execution_ms for r in results[name]]))
        at_replica[name] = {
            "execution_ms": execution,
            "queue_ms": float(np.mean([r.metrics.queue_ms for r in results[name]])),
            "tasks_per_s_per_replica": rows[name]["per_s"] / replicas,
            "worker_idle_ms_per_task": 1000 * replicas / rows[name]["per_s"] - execution}
    return {"rows": rows, "failed": failed, "served_by_replica": served,
            "at_replica": at_replica, "load_average_1m": load,
            "ratio": rows["replicas = 4"]["per_s"] / rows["replicas = 1"]["per_s"]}


def _timed(call: Any, per_caller: int) -> tuple[list[float], list[Any]]:
    """Each call's ms from ``CALLERS`` threads (concurrent_calls keeps only a summary)."""
    samples: list[float] = []
    lock = threading.Lock()

    def timed(c: int, i: int) -> Any:
        t0 = time.perf_counter()
        value = call(c, i)
        with lock:
            samples.append((time.perf_counter() - t0) * 1000)
        return value

    _, values = concurrent_calls(timed, CALLERS, per_caller)
    return samples, values


class Load:
    """``callers`` host threads calling route_task while ``on`` is set; counts as it goes."""

    def __init__(self, system: ServiceSystem, callers: int):
        self.system, self.on, self.stop = system, threading.Event(), threading.Event()
        self.lock = threading.Lock()
        self.active = self.done = 0
        self.failures: list[str] = []
        self.latency_ms: list[float] = []
        self.threads = [threading.Thread(target=self._caller, args=(n,), daemon=True)
                        for n in range(callers)]
        for t in self.threads:
            t.start()

    def _caller(self, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            if not self.on.wait(0.05):
                continue
            i += 1
            with self.lock:
                self.active += 1
            t0 = time.perf_counter()
            try:
                r = self.system.router.route_task(
                    Task(id=f"r{n}-{i}", type="echo", data=i, timeout_s=10))
                error = None if r.ok else f"{r.error.code.value}: {r.error.message}"
            except Exception as exc:  # a failed task, counted; the ramp goes on
                error = f"{type(exc).__name__}: {exc}"
            ms = (time.perf_counter() - t0) * 1000
            with self.lock:
                self.active -= 1
                self.done += 1
                self.latency_ms.append(ms)
                if error is not None:
                    self.failures.append(error)

    def close(self) -> None:
        self.on.clear()
        self.stop.set()
        for t in self.threads:
            t.join(15)


def replicas(system: ServiceSystem, service: str = "echo") -> tuple[int, int]:
    """(replicas that accept tasks, replicas there are: draining and stopping ones too)."""
    mine = [s for s in system.services(timeout=5) if (s.replica_of or s.name) == service]
    return sum(1 for s in mine if s.status.accepts_tasks), len(mine)


def ramp_figures(quick: bool) -> dict[str, Any]:
    """Idle, 16 callers, idle until back to 1 replica (or GIVE_UP_S after the load)."""
    idle_s, load_s = (1.0, 6.0) if quick else (2.0, 10.0)
    config = {"health": {"heartbeat_interval_s": HEARTBEAT_S},
              "services": {"echo": echo(autoscaling=AUTOSCALING)}}
    timeline: list[dict[str, float]] = []
    with ServiceSystem.start(config) as system:
        load = Load(system, CALLERS)
        t0, wall0 = time.monotonic(), time.time()
        ramp_start = ramp_end = to_max = to_min = None
        last_done, last_t = 0, t0
        try:
            while True:
                now = time.monotonic() - t0
                if ramp_start is None and now >= idle_s:
                    load.on.set()
                    ramp_start = now
                if ramp_start is not None and ramp_end is None and now >= ramp_start + load_s:
                    load.on.clear()
                    ramp_end = now
                up, running = replicas(system)
                t = time.monotonic()
                with load.lock:
                    done, active = load.done, load.active
                timeline.append({"t_s": t - t0, "replicas": up, "callers": active,
                                 "tasks_per_s": (done - last_done) / max(t - last_t, 1e-6)})
                last_done, last_t = done, t
                if ramp_start is not None and to_max is None \
                        and up >= AUTOSCALING["max_replicas"]:
                    to_max = t - t0 - ramp_start
                if ramp_end is not None and active == 0 and up == running == 1:
                    to_min = t - t0 - ramp_end  # and the removed ones have stopped
                    break
                if ramp_end is not None and t - t0 - ramp_end > GIVE_UP_S:
                    break
                time.sleep(max(0.0, SAMPLE_S - (time.monotonic() - t)))
        finally:
            load.close()
        events = [e for e in system.health.events() if e.kind is HealthEventKind.SERVICE_SCALED]
    decisions = [{"t_s": e.at - wall0, "service": e.service, "reason": e.reason} for e in events]
    return {"config": {"autoscaling": AUTOSCALING, "heartbeat_interval_s": HEARTBEAT_S,
                       "callers": CALLERS, "delay_ms": DELAY_MS, "idle_s": idle_s,
                       "load_s": load_s, "give_up_s": GIVE_UP_S},
            "ramp_start_s": ramp_start, "ramp_end_s": ramp_end,
            "to_max_replicas_s": to_max, "back_to_min_s": to_min,
            "tasks": load.done, "failed": len(load.failures), "failures": load.failures[:5],
            "latency": summarize(load.latency_ms) if load.latency_ms else None,
            "decisions": decisions, "timeline": timeline}


def goals(rep: dict[str, Any], ramp: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The issue's goal table, from this run's figures (None: not reached in the run)."""
    up, down = ramp["to_max_replicas_s"], ramp["back_to_min_s"]
    return {
        "echo 20 ms, 16 callers: tasks/s with replicas = 4 / replicas = 1": {
            "value": rep["ratio"], "goal": ">= 3.5", "met": rep["ratio"] >= 3.5},
        "autoscaling: seconds from ramp start to 4 replicas": {
            "value": up, "goal": "<= 5", "met": up is not None and up <= 5},
        "autoscaling: seconds from ramp end back to 1 replica": {
            "value": down, "goal": "<= 30", "met": down is not None and down <= 30},
        "autoscaling: failed tasks during the ramp": {
            "value": ramp["failed"], "goal": "0", "met": ramp["failed"] == 0},
    }


def run(quick: bool = False) -> dict[str, Any]:
    rep = replica_figures(quick)
    ramp = ramp_figures(quick)
    print_table(f"scale: echo delay_ms = {DELAY_MS}, {CALLERS} callers (route_task), per task",
                rep["rows"], floor=FLOOR)
    print(f"tasks served by replica: {rep['served_by_replica']}; failed: {rep['failed']}; "
          f"load average (1 min) before, after: {rep['load_average_1m']}")
    for name, r in rep["at_replica"].items():
        print(f"{name}: per replica {r['tasks_per_s_per_replica']:.1f} tasks/s; per task "
              f"execution {r['execution_ms']:.1f} ms, queued {r['queue_ms']:.1f} ms, "
              f"worker idle {r['worker_idle_ms_per_task']:.1f} ms")
    print("\n## scale: autoscaling ramp (t s, replicas accepting tasks, callers, tasks/s)")
    for s in ramp["timeline"]:
        print(f"{s['t_s']:6.1f} {s['replicas']:3d} {s['callers']:3d} {s['tasks_per_s']:7.0f}")
    print(f"ramp from {ramp['ramp_start_s']:.1f} s to {ramp['ramp_end_s']:.1f} s; "
          f"{ramp['tasks']} tasks, {ramp['failed']} failed {ramp['failures']}")
    print("decisions:")
    for d in ramp["decisions"]:
        print(f"  {d['t_s']:6.1f} s  {d['reason']}")
    table = goals(rep, ramp)
    print_goals("issue 15 goals (this run)", table)
    results = {"replicas": rep, "autoscaling": ramp, "goals": table}
    path = write_results("scale", results)
    print(f"\nresults: {path}")
    return results
