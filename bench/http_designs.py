"""Issue 11's goal, tried design by design: how an HTTP task handler reaches the runtime.

The daemon hands each task to Starlette's threadpool (``threadpool``). Beside it, in
the same run, one server process per design, each a host joined to the same echo
runtime (``bench.http_design_server``), differing only in that hand-over:

- ``executor``: a plain pool of 8 threads (``loop.run_in_executor``), no anyio;
- ``inline``: ``route_task`` on the event loop itself, no hand-over at all (it blocks
  every other request: the floor of any design that calls the host API);
- ``one-endpoint``: one thread multiplexing every task on one Thespian endpoint, the
  async host API the issue's note proposed;
- ``no-call``: the handler answers without the runtime (what HTTP alone costs a POST).

Clients are ``bench.http_api``'s: stdlib ``http.client`` keep-alive connections.
Latency: interleaved rounds of 40 calls per design, from one client. Throughput: 16
client threads. ``route_task`` from this process is the baseline of both.

Run: python -m bench http_designs [--quick]
"""
from __future__ import annotations

import subprocess
import sys
import time
from typing import Any, Callable

from host import ServiceSystem
from host.launcher import port_in_use
from messages import Task

from . import http_api
from .stats import concurrent_calls, summarize, write_results

DESIGNS = ("threadpool", "executor", "inline", "one-endpoint", "no-call")
FIRST_PORT_OFFSET = 10  # design servers listen on the admin port + 10, + 11, ...
PAYLOAD = {"text": "x" * 64}


def config() -> dict[str, Any]:
    return {"services": {"echo_plain": {"kind": "echo", "eager": True, "max_queue": 1024,
                                        "fetch_context": False}},
            "routes": {"echo-plain": "echo_plain"}}


def start_server(design: str, admin_port: int, port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "bench.http_design_server", design,
                               str(admin_port), str(port)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if port_in_use("127.0.0.1", port):
            return server
        if server.poll() is not None:
            raise RuntimeError(f"the {design} server exited ({server.returncode})")
        time.sleep(0.1)
    server.kill()
    raise RuntimeError(f"the {design} server did not listen within 60 s")


def measure(calls: dict[str, Callable[[int, int], Any]], rounds: int,
            per_round: int) -> dict[str, dict[str, float]]:
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):  # interleaved, so drift on a noisy machine hits every design alike
        for name, call in calls.items():
            for i in range(5):
                call(0, -1 - i)
            for i in range(per_round):
                started = time.perf_counter()
                call(0, i)
                samples[name].append((time.perf_counter() - started) * 1000)
    return {name: summarize(values) for name, values in samples.items()}


def run(quick: bool = False) -> dict[str, Any]:
    rounds, clients_rounds = (4, 1) if quick else (12, 3)
    servers: list[subprocess.Popen] = []
    with ServiceSystem.start(config()) as system:
        try:
            calls: dict[str, Callable[[int, int], Any]] = {
                "route_task": lambda n, i: system.router.route_task(
                    Task(id=f"t{n}-{i}", type="echo-plain", data=PAYLOAD)).unwrap()}
            for k, design in enumerate(DESIGNS):
                port = system.admin_port + FIRST_PORT_OFFSET + k
                servers.append(start_server(design, system.admin_port, port))
                calls[design] = http_api.echo_caller(f"http://127.0.0.1:{port}", PAYLOAD)
            latency = measure(calls, rounds, 40)
            per_s: dict[str, list[float]] = {name: [] for name in calls}
            for _ in range(clients_rounds):
                for name, call in calls.items():
                    per_s[name].append(concurrent_calls(call, 16, 30)[0]["per_s"])
        finally:
            for server in servers:
                server.kill()
                server.wait()
    base, base_per_s = latency["route_task"]["p50_ms"], sorted(per_s["route_task"])
    rows = {}
    for name in calls:
        median_per_s = sorted(per_s[name])[len(per_s[name]) // 2]
        rows[name] = {**latency[name], "added_p50_ms": latency[name]["p50_ms"] - base,
                      "per_s_16": median_per_s,
                      "ratio_16": median_per_s / base_per_s[len(base_per_s) // 2]}
    print("\n## HTTP task hand-over designs (echo; stdlib http.client clients)")
    print(f"{'design':<14} {'p50 ms':>8} {'p99 ms':>8} {'+ route_task':>13} "
          f"{'16 clients/s':>13} {'x route_task':>13}")
    for name, r in rows.items():
        print(f"{name:<14} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} {r['added_p50_ms']:>+13.2f} "
              f"{r['per_s_16']:>13.0f} {r['ratio_16']:>13.2f}")
    print("goal (issue 11): + route_task <= 1 ms at p50, and >= 1x route_task's requests/s")
    results = {"designs": rows}
    print(f"\nresults: {write_results('http_designs', results)}")
    return results
