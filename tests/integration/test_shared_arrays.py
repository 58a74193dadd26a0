"""Large arrays through shared memory between a host and a service (runtime/shared_arrays.py):
equal on arrival, no copy in the frame, and no segment left in /dev/shm after a kill -9
of either side."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from messages import ErrorCode, Task
from tests.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def in_dev_shm(names) -> set[str]:
    return set(names) & set(os.listdir("/dev/shm"))


def echo_system(start_system):
    return start_system({"services": {"echo": {"kind": "echo", "eager": True,
                                               "fetch_context": False}}})


def test_a_large_array_arrives_equal_through_a_segment_and_none_is_left(start_system):
    system = echo_system(start_system)
    audio = np.random.default_rng(1).standard_normal(160_000).astype(np.float32)
    for i in range(3):
        result = system.router.route_task(Task(id=f"a{i}", type="echo", data={"audio": audio}))
        assert result.ok and np.array_equal(result.data["audio"], audio)
    names = system._segments.names()
    assert len(names) == 1 and in_dev_shm(names)  # one segment, lent to each task in turn
    system.shutdown()
    assert not in_dev_shm(names)


def test_kill_9_of_the_service_mid_task_leaves_no_segment(start_system):
    system = echo_system(start_system)
    audio = np.ones(160_000, dtype=np.float32)
    got = []
    caller = threading.Thread(target=lambda: got.append(system.router.route_task(Task(
        id="doomed", type="echo", data={"audio": audio}, metadata={"inject": "hang"},
        timeout_s=20))))
    caller.start()
    time.sleep(0.5)  # in the service, on its segment
    os.kill(system.services()[0].pid, signal.SIGKILL)
    caller.join(10)
    assert got and got[0].error.code is ErrorCode.EXECUTION_ERROR
    names = system._segments.names()
    assert names
    system.shutdown()
    assert not in_dev_shm(names)


def test_kill_9_of_the_host_leaves_no_segment(start_system):
    system = echo_system(start_system)
    host = subprocess.Popen([sys.executable, "-m", "tests.integration.shm_host",
                             str(system.admin_port), str(system.secret_file)],
                            stdout=subprocess.PIPE, text=True)
    try:
        said = json.loads(host.stdout.readline())
        assert said["ok"] and said["segments"]
        assert in_dev_shm(said["segments"])
        host.kill()
        host.wait(10)
        wait_until(lambda: not in_dev_shm(said["segments"]), timeout=10)
    finally:
        if host.poll() is None:
            host.kill()
    # and the runtime serves on, arrays included
    audio = np.ones(160_000, dtype=np.float32)
    assert system.router.route_task(Task(id="after", type="echo", data={"audio": audio})).ok
