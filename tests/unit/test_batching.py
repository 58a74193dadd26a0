"""BatchPolicy, without actors: batches fill with closed-loop callers, and a lone
task never waits out the delay (issue 14)."""
from __future__ import annotations

import heapq

import pytest
from hypothesis import given, settings, strategies as st

from actors.batching import BatchPolicy


def simulate(callers: int, max_batch: int, delay_s: float, compute_s, rtt_s: float,
             tasks: int) -> tuple[list[int], list[float], list[float]]:
    """Closed-loop callers (each sends its next task ``rtt_s`` after its answer) and one
    worker, in simulated time: the batch sizes, each task's wait before its batch, and
    how long each batch's oldest task waited with the worker free."""
    policy = BatchPolicy(max_batch, delay_s)
    arrivals = [(0.0005 * i, i) for i in range(callers)]  # (time, caller)
    heapq.heapify(arrivals)
    queue: list[float] = []
    now, free_at, sizes, waits, idle, sent = 0.0, 0.0, [], [], [], callers
    timer = None
    while len(waits) < tasks:
        nxt = min([t for t in (arrivals[0][0] if arrivals else None, timer,
                               free_at if free_at > now else None) if t is not None])
        now = nxt
        while arrivals and arrivals[0][0] <= now:
            queue.append(heapq.heappop(arrivals)[0])
        timer = None
        if free_at <= now:
            plan = policy.plan(len(queue), now, worker_busy=False)
            if plan.take:
                batch, queue = queue[:plan.take], queue[plan.take:]
                sizes.append(len(batch))
                waits += [now - t for t in batch]
                idle.append(now - max(free_at, batch[0]))
                free_at = now + compute_s(len(batch))
                policy.batch_done(len(batch), len(queue), free_at)
                for _ in batch:
                    if sent < tasks + callers:
                        heapq.heappush(arrivals, (free_at + rtt_s, sent))
                        sent += 1
            elif plan.wait_s:
                timer = now + plan.wait_s
    return sizes, waits, idle


def tiny_model(n: int) -> float:  # the tiny wav2vec2 on 1 s clips: 2.7 ms alone, 5.6 ms for 8
    return 0.0027 + 0.0004 * (n - 1)


def test_eight_closed_loop_callers_fill_batches_of_at_least_five():
    sizes, _, _ = simulate(callers=8, max_batch=8, delay_s=0.005, compute_s=tiny_model,
                        rtt_s=0.002, tasks=400)
    assert sum(sizes) / len(sizes) >= 5, sizes[:20]


def test_a_lone_caller_never_waits_for_the_delay():
    _, waits, _ = simulate(callers=1, max_batch=8, delay_s=0.005, compute_s=tiny_model,
                        rtt_s=0.002, tasks=100)
    assert max(waits) == 0.0


@settings(max_examples=60, deadline=None)
@given(callers=st.integers(1, 16), max_batch=st.integers(1, 8),
       delay_ms=st.floats(0, 20), rtt_ms=st.floats(0.1, 30))
def test_no_task_waits_past_the_delay_after_the_worker_is_free(callers, max_batch, delay_ms, rtt_ms):
    sizes, _, idle = simulate(callers, max_batch, delay_ms / 1000, tiny_model, rtt_ms / 1000, 60)
    assert all(1 <= s <= max_batch for s in sizes)
    assert max(idle) <= delay_ms / 1000 + 1e-9


def test_the_expectation_follows_the_callers():
    p = BatchPolicy(max_batch_size=8, max_delay_s=0.005)
    p.batch_done(answered=8, queued=0, now=1.0)
    assert p.plan(7, 1.001, False).wait_s == pytest.approx(0.004)  # one caller went away...
    assert p.plan(7, 1.005, False).take == 7                         # ...waited for once
    p.batch_done(answered=7, queued=0, now=2.0)
    assert p.plan(7, 2.0, False).take == 7                           # then expected no more
