"""Routing overhead with the echo service, and recovery after kill -9.

Run: python -m bench runtime [--quick]
"""
from __future__ import annotations

import os
import signal
import time
from typing import Any

from messages import Task
from host import ServiceSystem
from host.launcher import HTTP_PORT_OFFSET

from . import http_api
from .floor import floor_actors
from .stats import concurrent_calls, print_table, summarize, time_calls, write_results


def config() -> dict[str, Any]:
    return {
        "services": {
            "echo": {"kind": "echo", "eager": True, "max_queue": 1024},
            # A short restart period, so each kill below is the first in its window
            # and measures a restart, not the backoff between repeated restarts.
            "echo_plain": {"kind": "echo", "eager": True, "max_queue": 1024,
                           "fetch_context": False, "restart_period_s": 0.5},
        },
        "routes": {"echo": "echo", "echo-plain": "echo_plain"},
        "http": dict(http_api.HTTP_CONFIG),
    }


def http_url(system: ServiceSystem) -> str:
    return f"http://127.0.0.1:{system.admin_port + HTTP_PORT_OFFSET}"


def measure_latency(system: ServiceSystem, n: int) -> dict[str, dict[str, float]]:
    with system.open_endpoint() as endpoint:  # the floor's own endpoint, on this thread
        return _measure_latency(system, endpoint, n)


def _measure_latency(system: ServiceSystem, endpoint: Any, n: int) -> dict[str, dict[str, float]]:
    ping, forward = floor_actors(endpoint)
    payload = {"text": "x" * 64}
    service = system.get_service("echo_plain")
    http_echo = http_api.echo_caller(http_url(system), payload)
    http_live = http_api.live_caller(http_url(system))
    calls = {
        "thespian ask (floor)": lambda i: endpoint.ask(ping, payload, 5),
        "thespian two-hop chain (floor)": lambda i: endpoint.ask(forward, payload, 5),
        "route_task echo, no context fetch": lambda i: system.router.route_task(
            Task(id=f"p{i}", type="echo-plain", data=payload)).unwrap(),
        "route_task echo, with context fetch": lambda i: system.router.route_task(
            Task(id=f"c{i}", type="echo", data=payload)).unwrap(),
        "execute_task echo (service handle)": lambda i: service.execute_task(
            Task(id=f"d{i}", type="echo", data=payload)).unwrap(),
        "HTTP POST echo, no context fetch": http_echo,
        "HTTP GET /livez (HTTP floor)": http_live,
    }
    # Two interleaved rounds, so drift on a noisy machine hits every figure alike.
    samples: dict[str, list[dict[str, float]]] = {name: [] for name in calls}
    for _ in range(2):
        for name, call in calls.items():
            samples[name].append(time_calls(call, n // 2, warmup=30))
    return {name: _merge(rounds) for name, rounds in samples.items()}


def _merge(rounds: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(r[key] for r in rounds) / len(rounds) for key in rounds[0]}


def measure_recovery(system: ServiceSystem, reps: int) -> dict[str, float]:
    """Time from kill -9 of the echo service's process to its next successful task."""
    samples = []
    for rep in range(reps):
        pid = next(s.pid for s in system.services() if s.name == "echo_plain")
        os.kill(pid, signal.SIGKILL)
        killed = time.perf_counter()
        attempt = 0
        while True:
            attempt += 1
            result = system.router.route_task(Task(id=f"k{rep}-{attempt}", type="echo-plain", data=1))
            if result.ok:
                break
            time.sleep(0.0005)
        samples.append((time.perf_counter() - killed) * 1000)
        time.sleep(0.7)  # past restart_period_s: the next kill starts a quiet window
    return summarize(samples)


def measure_throughput(system: ServiceSystem, callers: int, per_caller: int) -> dict[str, float]:
    """route_task with echo from ``callers`` host threads at once."""
    return concurrent_calls(lambda n, i: system.router.route_task(
        Task(id=f"t{n}-{i}", type="echo-plain", data=i)).unwrap(), callers, per_caller)[0]


def measure_cold_start(reps: int) -> dict[str, float]:
    """From ServiceSystem.start() to ready (a fresh interpreter, admin, supervisor, echo)."""
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        system = ServiceSystem.start({"services": {"echo": {"kind": "echo", "eager": True}}})
        samples.append((time.perf_counter() - started) * 1000)
        system.shutdown()
    return summarize(samples)


def measure_lazy_init(system: ServiceSystem, reps: int) -> dict[str, float]:
    """get_service on a lazy echo: Initialize message, load, status back."""
    samples = []
    for i in range(reps):
        name = f"lazy{i}"
        started = time.perf_counter()
        system.get_service(name)
        samples.append((time.perf_counter() - started) * 1000)
    return summarize(samples)


def run(quick: bool = False) -> dict[str, Any]:
    n = 400 if quick else 2000
    lazy = 5 if quick else 20
    cfg = config()
    cfg["services"].update({f"lazy{i}": {"kind": "echo"} for i in range(lazy)})
    with ServiceSystem.start(cfg) as system:
        latency = measure_latency(system, n)
        throughput, http_throughput = {}, {}
        for c in (1, 4, 16):  # side by side, so drift hits both alike
            throughput[f"{c} concurrent callers"] = measure_throughput(system, c, n // c // 2)
            http_throughput[f"{c} concurrent clients"] = http_api.measure_throughput(
                http_url(system), c, n // c // 2)
        init = {"lazy echo: get_service (initialize)": measure_lazy_init(system, lazy)}
        recovery = {"kill -9 -> next success (echo)":
                    measure_recovery(system, reps=5 if quick else 20)}
    cold = {"cold start to ready (echo)": measure_cold_start(2 if quick else 5)}
    print_table("Runtime: echo round trips from a host thread", latency,
                floor="thespian ask (floor)")
    print_table("Runtime: route_task throughput (echo, no context fetch)", throughput)
    print_table("HTTP: POST /v1/tasks/echo-plain throughput (keep-alive clients)",
                http_throughput)
    print_table("Runtime: start, initialize, recover", {**cold, **init, **recovery})
    results = {"latency": latency, "throughput": throughput,
               "http_throughput": http_throughput, "init": init,
               "recovery": recovery, "cold_start": cold}
    path = write_results("runtime", results)
    print(f"\nresults: {path}")
    return results
