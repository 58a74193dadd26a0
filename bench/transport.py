"""What signing every frame costs: a bare ask (caller -> actor -> caller) over
Thespian's stock TCP transport and over runtime.frames (keyed BLAKE3 tag, size
limit, linear receive), at 100 B and at 1 MiB.

Run: python -m bench transport [--quick]

runtime.frames adapts Thespian for a whole process, so each variant runs in an
interpreter of its own (the stock one imports nothing of the runtime); the two
alternate, so that drift on a noisy machine hits both alike. Goals (issue 10):
at most 5 % slower at 100 B, and at most 0.5 ms added per hop per MB.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .floor import floor_actors
from .stats import print_table, time_calls, write_results

VARIANTS = ("stock", "signed")
MIB = 1 << 20
# In a dict, as in the runtime's messages. Not 1 MiB of bytes: Thespian formats every
# message it sends and receives with str() for a debug line it then drops (10 ms for
# 1 MiB of bytes here), which would drown what the frames cost; an array prints short.
PAYLOADS = {
    "100 B": lambda: {"b": b"x" * 100},
    "1 MiB float32 array": lambda: {"a": np.ones(MIB // 4, dtype=np.float32)},
}


def child(variant: str, n_small: int, n_large: int) -> dict[str, dict[str, float]]:
    """Measure in this process: a fresh admin, one echoing actor, every payload."""
    import socket

    from thespian.actors import ActorSystem

    if variant == "signed":
        from runtime import frames
        frames.use_secret_file(frames.write_secret_file(Path(tempfile.mkdtemp(), "secret.key")))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    asys = ActorSystem("multiprocTCPBase", {"Admin Port": port}, transientUnique=True)
    try:
        ping, _ = floor_actors(asys)
        out = {}
        for name, make in PAYLOADS.items():
            payload = make()
            n = n_small if name == "100 B" else n_large
            out[name] = time_calls(lambda i: asys.ask(ping, payload, 10), n, warmup=20)
        return out
    finally:
        asys.shutdown()


def run(quick: bool = False) -> dict[str, Any]:
    n_small, n_large, rounds = (300, 60, 2) if quick else (2000, 300, 3)
    samples: dict[str, list[dict[str, float]]] = {}
    for _ in range(rounds):
        for variant in VARIANTS:
            out = subprocess.run(
                [sys.executable, "-m", "bench.transport", "--child", variant,
                 str(n_small), str(n_large)],
                capture_output=True, text=True, timeout=600, check=True,
                cwd=Path(__file__).resolve().parent.parent)
            for name, summary in json.loads(out.stdout.splitlines()[-1]).items():
                samples.setdefault(f"ask {name}, {variant}", []).append(summary)
    rows = {name: {key: sum(r[key] for r in rs) / len(rs) for key in rs[0]}
            for name, rs in samples.items()}
    goals = overheads(rows)
    macs = mac_costs(n_small)
    print_table("Transport: bare ask, stock frames against signed frames", rows,
                floor="ask 100 B, stock")
    for line in goals["lines"]:
        print(line)
    print_table("The tag alone: one MAC (a hop signs once and checks once)", macs)
    results = {"latency": rows, "goals": goals, "macs": macs}
    path = write_results("transport", results)
    print(f"\nresults: {path}")
    return results


def mac_costs(n: int) -> dict[str, dict[str, float]]:
    """Keyed BLAKE3 (the choice) beside HMAC-SHA256, on this machine, in this run."""
    import hashlib
    import hmac
    import os

    import blake3

    key, out = os.urandom(32), {}
    for label, size in (("100 B", 100), ("1 MiB", MIB)):
        data = os.urandom(size)
        reps = n if size < MIB else max(n // 10, 20)
        out[f"keyed BLAKE3, {label}"] = time_calls(
            lambda i: blake3.blake3(data, key=key).digest(), reps, warmup=5)
        out[f"HMAC-SHA256, {label}"] = time_calls(
            lambda i: hmac.digest(key, data, hashlib.sha256), reps, warmup=5)
    return out


def overheads(rows: dict[str, dict[str, float]]) -> dict[str, Any]:
    """The goals: % slower at 100 B; ms added per hop per MB at 1 MiB (an ask is two hops)."""
    small = 100 * (rows["ask 100 B, signed"]["p50_ms"] / rows["ask 100 B, stock"]["p50_ms"] - 1)
    out: dict[str, Any] = {"100 B slower %": small,
                           "lines": [f"100 B: signed is {small:+.1f} % against stock at p50 "
                                     "(goal <= 5 %)"]}
    for name in PAYLOADS:
        if name == "100 B":
            continue
        added = (rows[f"ask {name}, signed"]["p50_ms"] - rows[f"ask {name}, stock"]["p50_ms"]) \
            / 2 / (MIB / 1e6)
        out[f"{name} ms per hop per MB"] = added
        out["lines"].append(f"{name}: signed adds {added:+.3f} ms per hop per MB at p50 "
                            "(goal <= 0.5 ms)")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=VARIANTS, required=True)
    parser.add_argument("n_small", type=int)
    parser.add_argument("n_large", type=int)
    args = parser.parse_args()
    print(json.dumps(child(args.child, args.n_small, args.n_large)))
