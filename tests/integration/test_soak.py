"""Soak: many routed tasks on the tiny model; memory and file descriptors must not grow.

The short run is part of the default suite; the 10,000-task run is marked slow
(``pytest -m slow tests/integration/test_soak.py -s`` prints its table).
"""
from __future__ import annotations

import threading

import numpy as np
import psutil
import pytest

from messages import Task
from services.wav2vec2.checkpoint import make_checkpoint

pytestmark = [pytest.mark.integration]
GROWTH_LIMIT_BYTES = 20 << 20


def snapshot(system) -> dict[int, tuple[str, int, int]]:
    names = {s.pid: s.name for s in system.services()}
    names.update({c.pid: c.name for c in system.refresh().core})
    out = {}
    for proc in system.processes():
        try:
            out[proc.pid] = (names.get(proc.pid, "runtime"), proc.memory_info().rss, proc.num_fds())
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.parametrize("tasks", [pytest.param(400, id="short"),
                                   pytest.param(10_000, id="10k", marks=pytest.mark.slow)])
@pytest.mark.timeout(900)
def test_soak_keeps_memory_and_fds_flat(start_system, tmp_path, tasks):
    model = str(make_checkpoint(tmp_path / "tiny", "tiny"))
    system = start_system({"services": {"wav2vec2": {
        "kind": "wav2vec2", "model": model, "local_files_only": True, "torch_threads": 1,
        "eager": True, "max_batch_size": 8, "max_batch_delay_ms": 2}}})
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    failures = []

    def run(prefix: str, count: int, callers: int = 4) -> None:
        def caller(n: int) -> None:
            for i in range(count // callers):
                r = system.router.route_task(Task(id=f"{prefix}{n}-{i}", type="speech-to-text",
                                                  data={"audio": audio}, store_results=i % 10 == 0))
                if not r.ok:
                    failures.append(r)
        threads = [threading.Thread(target=caller, args=(n,)) for n in range(callers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    run("warm", 200)  # warm-up: allocator pools, caches, the context store's first items
    before = snapshot(system)
    run("soak", tasks)
    after = snapshot(system)
    assert not failures, failures[:3]
    assert after.keys() == before.keys(), "a process was replaced during the soak"
    print(f"\n{'process':<12} {'RSS before MB':>14} {'after MB':>9} {'growth MB':>10} "
          f"{'fds before':>10} {'after':>6}")
    for pid, (name, rss, fds) in before.items():
        _, rss2, fds2 = after[pid]
        print(f"{name:<12} {rss / 1e6:>14.1f} {rss2 / 1e6:>9.1f} {(rss2 - rss) / 1e6:>10.1f} "
              f"{fds:>10} {fds2:>6}")
        assert rss2 - rss < GROWTH_LIMIT_BYTES, f"{name} grew {(rss2 - rss) / 1e6:.1f} MB"
        assert fds2 <= fds + 2, f"{name} opened {fds2 - fds} more file descriptors"
    assert set(after) == set(before), "no process was restarted or added"
