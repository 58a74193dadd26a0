"""A host in a process of its own, for a test to kill -9: it joins a runtime, sends one
task with a large array (through shared memory), prints the names of its segments as
one JSON line, then waits to be killed.

Run as ``python -m tests.integration.shm_host PORT SECRET_FILE``.
"""
from __future__ import annotations

import json
import sys
import time

import numpy as np

from host import ServiceSystem
from messages import Task


def main(port: int, secret_file: str) -> None:
    system = ServiceSystem.connect(port, secret_file=secret_file)
    audio = np.ones(160_000, dtype=np.float32)
    result = system.router.route_task(Task(id="from-doomed-host", type="echo",
                                           data={"audio": audio}))
    print(json.dumps({"ok": result.ok, "segments": system._segments.names()}), flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
