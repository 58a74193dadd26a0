"""runtime.allocator: a batch that allocates and frees the same large blocks each time
faults its pages in once, not every batch (glibc only)."""
from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

# A model batch in miniature: one large block freed, then several of another size
# alive at once; on the main thread (argv[2] == "main") or on a thread, as in a
# service's worker. Prints the page faults of the batches after the first.
BATCHES = textwrap.dedent("""
    import resource, sys, threading
    import numpy as np
    from runtime.allocator import keep_freed_memory
    if sys.argv[1] == "kept":
        assert keep_freed_memory()
    faults = []
    def batch():
        block = np.ones(10 << 17)                       # 10 MB
        del block
        parts = [np.ones(8 << 17) for _ in range(3)]    # 3 x 8 MB at once
        return sum(float(p[-1]) for p in parts)
    def run():
        for _ in range(5):
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            batch()
            faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
    if sys.argv[2] == "main":
        run()
    else:
        worker = threading.Thread(target=run)
        worker.start()
        worker.join()
    print(sum(faults[1:]))
""")


def later_batches_faults(mode: str, where: str) -> int:
    out = subprocess.run([sys.executable, "-c", BATCHES, mode, where], capture_output=True,
                         text=True, timeout=60, check=True, cwd=Path(__file__).parents[2])
    return int(out.stdout.split()[-1])


def test_later_batches_reuse_the_memory_of_the_first():
    # glibc's defaults give the heap's top back after each batch (~1,500 faults a
    # batch here, on the main thread); kept, the later batches fault nothing in.
    assert later_batches_faults("default", "main") > 1000
    assert later_batches_faults("kept", "main") < 50
    assert later_batches_faults("kept", "thread") < 50
