"""Shared-memory arrays (runtime/shared_arrays.py) without actors: a host's lease and a
service's mappings, in one process but through the same names another process uses."""
from __future__ import annotations

import os

import numpy as np
import pytest

from messages.errors import InvalidInput
from runtime.shared_arrays import (
    MIN_SHARED_BYTES, Lease, Mappings, SegmentPool, SharedArray,
)


def in_dev_shm(names) -> set[str]:
    return set(names) & set(os.listdir("/dev/shm"))


@pytest.fixture
def pool():
    pool = SegmentPool(max_bytes=8 << 20)
    yield pool
    pool.close()
    assert not in_dev_shm(pool.names())


def test_large_arrays_cross_as_handles_and_come_back_equal(pool):
    audio = np.random.default_rng(0).standard_normal(160_000).astype(np.float32)  # 10 s
    small = np.arange(10, dtype=np.int16)
    lease = Lease(pool)
    data = lease.export({"audio": audio, "small": small, "rate": 16000, "more": [audio[:20000]]})
    assert isinstance(data["audio"], SharedArray) and data["small"] is small
    assert isinstance(data["more"][0], SharedArray)  # 80 KB, nested: shared too
    got = Mappings().resolve(data)
    assert np.array_equal(got["audio"], audio) and got["audio"].dtype == np.float32
    assert not got["audio"].flags.writeable  # the service reads the host's memory, never writes it
    assert np.array_equal(got["more"][0], audio[:20000]) and got["rate"] == 16000
    lease.release()


def test_what_is_not_worth_sharing_travels_as_it_is(pool):
    lease = Lease(pool)
    data = {"a": np.zeros(MIN_SHARED_BYTES // 8 - 1), "b": np.array(["x"] * 10_000, dtype=object),
            "c": b"\0" * 100_000, "d": np.zeros(100_000, dtype=">f4")}
    assert lease.export(data) is data  # too small, objects, bytes, non-native byte order
    assert lease.export(7) == 7


def test_a_segment_is_lent_to_one_task_at_a_time_then_reused(pool):
    audio = np.ones(20_000, dtype=np.float32)
    first, second = Lease(pool), Lease(pool)
    a, b = first.export(audio), second.export(audio)
    assert a.segment != b.segment  # both in flight: two segments
    first.release()
    third = Lease(pool)
    assert third.export(audio).segment == a.segment  # given back: reused, already mapped
    second.release(), third.release()


def test_a_full_pool_lets_arrays_travel_pickled():
    pool = SegmentPool(max_bytes=128 * 1024)
    try:
        lease = Lease(pool)
        audio = np.ones(20_000, dtype=np.float32)  # 80 KB: a 128 KB segment
        assert isinstance(lease.export(audio), SharedArray)
        assert lease.export(audio) is audio
        lease.release()
    finally:
        pool.close()


def test_a_service_refuses_malformed_or_missing_segments(pool):
    with pytest.raises(InvalidInput):
        Mappings().resolve(SharedArray("grym_nope_0", (4,), "<f4", 16))  # not there
    with pytest.raises(InvalidInput):
        Mappings().resolve(SharedArray("../etc/passwd", (4,), "<f4", 16))
    lease = Lease(pool)
    handle = lease.export(np.ones(20_000, dtype=np.float32))
    for bad in (SharedArray(handle.segment, (20_000,), "|O", 160_000),          # objects
                SharedArray(handle.segment, (30_000,), "<f4", 80_000),          # size mismatch
                SharedArray(handle.segment, (10_000_000,), "<f4", 40_000_000)):  # past its end
        with pytest.raises(InvalidInput):
            Mappings().resolve(bad)
    lease.release()


def test_closing_the_pool_unlinks_even_a_segment_still_lent():
    pool = SegmentPool()
    lease = Lease(pool)
    lease.export(np.ones(20_000, dtype=np.float32))
    Lease(pool).release()
    names = pool.names()
    assert in_dev_shm(names)
    pool.close()
    lease.release()  # came back after the close: unlinked then
    assert not in_dev_shm(names)


def test_mappings_are_bounded_and_dropped_when_idle(pool):
    maps = Mappings(kept=2, idle_s=3600)
    leases = [Lease(pool) for _ in range(3)]
    for lease in leases:
        maps.resolve(lease.export(np.ones(20_000, dtype=np.float32)))
    assert len(maps) == 2
    idle = Mappings(kept=10, idle_s=0.0)
    idle.resolve(leases[0].export(np.ones(20_000, dtype=np.float32)))
    idle.sweep()
    assert len(idle) == 0
    for lease in leases:
        lease.release()
