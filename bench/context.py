"""The context repository through its actor, from a host process.

retrieve by id; a query returning 20 items from stores of 1,000 and 100,000
items; stores per second with SQLite persistence on; and the context actor's
RSS holding 100,000 items of 1 KB. Each beside a bare Thespian ask measured in
the same run.

Run: python -m bench context [--quick]
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from context.manager import ContextManager
from messages.context import ContextFilter, ContextItem
from host import ServiceSystem

from .floor import floor_actors
from .stats import concurrent_calls, print_table, time_calls, write_results

TAGS = tuple(f"tag{i}" for i in range(50))


def item(i: int, size: int = 1024) -> ContextItem:
    return ContextItem(type=("prompt", "audio_parameters", "features", "transcription")[i % 4],
                       source=f"model{i % 10}", content={"i": i, "text": "x" * (size - 40)},
                       tags=frozenset({TAGS[i % len(TAGS)]}), priority=1 + i % 9,
                       ttl_s=86400)


def prefill(path: Path, count: int) -> None:
    """Fill a SQLite store in this process (same repository code as the actor)."""
    manager = ContextManager.from_config({"persistence": "sqlite", "path": str(path),
                                          "max_items": max(count * 2, 1000), "max_bytes": "4GB"})
    for i in range(count):
        manager.store(item(i))
    manager.close()


def measure_store(path: Path, n: int) -> tuple[dict[str, dict[str, float]], Any]:
    settings = {"persistence": "sqlite", "path": str(path), "max_items": 1_000_000,
                "max_bytes": "4GB"}
    config = {"context": settings, "services": {"echo": {"kind": "echo", "eager": True}}}
    with ServiceSystem.start(config) as system, system.open_endpoint() as endpoint:
        ping, _ = floor_actors(endpoint)
        ids = [it.id for it in system.context.query(ContextFilter(limit=1000)).items]
        rows = {
            "thespian ask (floor)": time_calls(lambda i: endpoint.ask(ping, {"k": i}, 5), n),
            "retrieve by id": time_calls(lambda i: system.context.retrieve(ids[i % len(ids)]), n),
            "query 20 of the store (type + tag)": time_calls(lambda i: system.context.query(
                ContextFilter(types=frozenset({"prompt"}), tags=frozenset({TAGS[(i * 4) % 50]}),
                              limit=20)), n),
            "store 1 KB, SQLite NORMAL, 1 caller": time_calls(
                lambda i: system.context.store(item(10_000_000 + i)), n),
        }
        rows["store 1 KB, SQLite NORMAL, 4 callers"] = _parallel_stores(system, 4, n // 4)
        context_pid = next(c.pid for c in system.refresh().core if c.name == "context")
        rss = psutil.Process(context_pid).memory_info().rss if context_pid else None
    return rows, rss


def _parallel_stores(system: ServiceSystem, callers: int, per_caller: int) -> dict[str, float]:
    return concurrent_calls(lambda n, i: system.context.store(
        item(20_000_000 + n * per_caller + i)), callers, per_caller)[0]


def run(quick: bool = False) -> dict[str, Any]:
    n = 300 if quick else 2000
    sizes = [1_000] if quick else [1_000, 100_000]
    results: dict[str, Any] = {}
    for count in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "context.db"
            started = time.perf_counter()
            prefill(path, count)
            fill_s = time.perf_counter() - started
            rows, rss = measure_store(path, n)
        print_table(f"context: store of {count:,} items of 1 KB (SQLite)", rows,
                    floor="thespian ask (floor)")
        print(f"context actor RSS with {count:,} items: {(rss or 0) / 1e6:.0f} MB; "
              f"in-process prefill {count / fill_s:,.0f} stores/s")
        results[str(count)] = {"rows": rows, "context_actor_rss_bytes": rss,
                               "prefill_stores_per_s": count / fill_s}
    path = write_results("context", results)
    print(f"\nresults: {path}")
    return results
