"""The wav2vec2 service under the supervisor, on the tiny random-weight checkpoint."""
from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest

from messages import ErrorCode, Task
from messages.context import ContextFilter, ContextItem
from messages.service import ServiceStatus
from services.wav2vec2.checkpoint import make_checkpoint
from tests.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(make_checkpoint(tmp_path_factory.mktemp("w2v") / "tiny", "tiny"))


def w2v(model, **settings):
    return {"kind": "wav2vec2", "model": model, "local_files_only": True, "torch_threads": 1,
            **settings}


@pytest.fixture(scope="module")
def shared(start_module_system, tiny):
    return start_module_system({"services": {"wav2vec2": w2v(tiny, eager=True)}})


@pytest.fixture
def system(shared):
    """One eager wav2vec2 service with its kind's defaults, shared by the tests that would
    each start this same runtime (7 s a start, most of it importing torch). Each gets it
    never restarted and without audio parameters in the context, and leaves it so."""
    assert [s.restarts for s in shared.services()] == [0]
    yield shared
    for item in shared.context.query(ContextFilter(types=frozenset({"audio_parameters"}))).items:
        shared.context.delete(item.id)


def tone(seconds=1.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_every_task_type_through_the_router(system):
    system.context.store(ContextItem(type="audio_parameters", source="host",
                                     content={"sample_rate": 8000}))
    audio_8k = tone(1.0, 8000)  # its rate comes from the context
    cases = {
        ("speech-to-text", None): "transcription",
        ("audio-feature-extraction", None): "features",
        ("audio_process", None): "transcription",
        ("audio_analyze", "patterns"): "patterns",
        ("audio_analyze", "features"): "features",
    }
    for (task_type, analysis), expected in cases.items():
        data = {"audio": audio_8k} if analysis is None else {"audio": audio_8k,
                                                              "analysis_type": analysis}
        result = system.router.route_task(Task(id=f"{task_type}-{analysis}", type=task_type,
                                               data=data))
        assert result.ok, result.error
        assert result.data["analysis_type"] == expected
        assert result.data["duration_s"] == pytest.approx(1.0)
        assert 0 < result.metrics.execution_ms < result.metrics.total_ms


def test_bad_audio_gets_invalid_input_and_the_service_lives(system):
    for data in (np.zeros(0, np.float32), np.full(16000, np.nan, np.float32), b"not a wav",
                 np.stack([tone(), tone()])):
        result = system.router.route_task(Task(id="bad", type="speech-to-text", data=data))
        assert result.error.code is ErrorCode.INVALID_INPUT
    assert system.router.route_task(Task(id="good", type="speech-to-text", data=tone())).ok
    assert system.services()[0].restarts == 0


def test_concurrent_callers_are_batched(start_system, tiny):
    system = start_system({"services": {"wav2vec2": w2v(tiny, eager=True, max_batch_size=8,
                                                        max_batch_delay_ms=50)}})
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(system.router.route_task(
        Task(id=f"c{i}", type="speech-to-text", data=tone())))) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and all(r.ok for r in results)
    assert max(r.metrics.batch_size for r in results) > 1
    texts = {r.data["text"] for r in results}
    assert len(texts) == 1  # the same audio gives the same text, batched or not


def test_without_batching_keys_the_service_batches_by_its_kinds_defaults(system):
    # No max_batch_size or max_batch_delay_ms in the table: the wav2vec2 kind's
    # defaults (8, 5 ms) apply, not the spec's unbatched ones.
    before = system.metrics("wav2vec2")[0]  # the shared runtime's earlier tests' batches
    callers, start = 16, threading.Barrier(16)
    results = []

    def call(i):
        start.wait()
        results.append(system.router.route_task(Task(id=f"d{i}", type="speech-to-text",
                                                      data=tone())))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == callers and all(r.ok for r in results)
    after = system.metrics("wav2vec2")[0]
    batches = after.batches - before.batches
    batched = round(after.mean_batch_size * after.batches - before.mean_batch_size * before.batches)
    assert batched == callers and batches < callers and batched / batches > 1, (before, after)


def test_crash_during_a_batch_fails_every_task_of_it_then_recovers(start_system, tiny):
    # Four callers in a loop, with a long batch delay: whatever is queued or running
    # in the service when its process is killed is answered with the lost service's
    # error at once (a lone task no longer waits out the delay, so the tasks are not
    # held by sending them all at once).
    system = start_system({"services": {"wav2vec2": w2v(tiny, eager=True, max_batch_size=8,
                                                        max_batch_delay_ms=2000)}})
    pid = system.services()[0].pid
    failures, stop = [], threading.Event()

    def caller(n):
        i = 0
        while not stop.is_set():
            i += 1
            r = system.router.route_task(Task(id=f"b{n}-{i}", type="speech-to-text",
                                              data=tone(), timeout_s=30))
            if not r.ok:
                failures.append((r, time.monotonic()))
                return

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    stop.set()  # no new tasks: the ones in flight are answered
    for t in threads:
        t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert failures and all(at - killed < 5 for _, at in failures)
    codes = [r.error.code for r, _ in failures]
    assert set(codes) <= {ErrorCode.EXECUTION_ERROR, ErrorCode.SERVICE_UNAVAILABLE}
    assert codes.count(ErrorCode.EXECUTION_ERROR) >= 1
    wait_until(lambda: system.services()[0].status is ServiceStatus.ONLINE, timeout=20)
    assert system.services()[0].pid != pid


def test_memory_limit_refuses_to_load_and_the_service_fails(start_system, tiny):
    system = start_system({"services": {"wav2vec2": w2v(tiny, eager=True, max_memory="1MB",
                                                        max_restarts=1, backoff_initial_s=0.01)}})
    wait_until(lambda: system.services()[0].status is ServiceStatus.FAILED, timeout=30)
    assert "max_memory" in system.services()[0].last_error
    result = system.router.route_task(Task(id="t", type="speech-to-text", data=tone()))
    assert result.error.code is ErrorCode.SERVICE_UNAVAILABLE


def test_the_hosts_copy_of_the_context_serves_tasks_without_a_round_trip(system):
    ack = system.context.store(ContextItem(type="audio_parameters", source="host",
                                           content={"sample_rate": 8000}))
    copy = system._direct.context.replica
    wait_until(lambda: copy.ready and copy.seq >= ack.seq, timeout=5)
    before = system._direct.sent
    result = system.router.route_task(Task(id="ctx-1", type="speech-to-text",
                                           data={"audio": tone(1.0, 8000)}))
    assert result.ok, result.error
    assert system._direct.sent == before + 1  # straight to the service, context from the copy
    assert result.data["duration_s"] == pytest.approx(1.0)  # read as 8 kHz, as the context says
    # an update reaches the copy before the host's next task (its own write: read-your-writes)
    system.context.update(ack.item_id, {"content": {"sample_rate": 16000}})
    result = system.router.route_task(Task(id="ctx-2", type="speech-to-text",
                                           data={"audio": tone(1.0, 16000)}))
    assert result.ok and result.data["duration_s"] == pytest.approx(1.0)
