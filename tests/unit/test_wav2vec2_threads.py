"""The wav2vec2 kind shortens OpenMP's spinning after each parallel region
(services/wav2vec2/__init__.py): set before torch loads, where a launcher loads it."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import services.wav2vec2

# A fresh interpreter, as a launcher: its own modules first, then the kind.
LAUNCHER = textwrap.dedent("""
    import os, sys
    import host.launcher
    torch_before = "torch" in sys.modules
    from services.registry import load_kind
    load_kind("wav2vec2")
    torch_after = "torch" in sys.modules   # the supervisor imports it later (preload)
    print(os.environ["GOMP_SPINCOUNT"], torch_before, torch_after)
""")


def test_the_spin_count_is_set_before_torch_is_imported():
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    out = subprocess.run([sys.executable, "-c", LAUNCHER], capture_output=True, text=True,
                         timeout=120, check=True, env=env, cwd=Path(__file__).parents[2])
    assert out.stdout.split() == ["20000", "False", "False"]


def test_a_spin_count_already_set_is_kept(monkeypatch):
    monkeypatch.setenv("GOMP_SPINCOUNT", "300000")
    importlib.reload(services.wav2vec2)
    assert os.environ["GOMP_SPINCOUNT"] == "300000"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    importlib.reload(services.wav2vec2)
    assert os.environ["GOMP_SPINCOUNT"] == "20000"
