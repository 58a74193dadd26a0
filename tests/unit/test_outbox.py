"""The host's outbox: a tell that hangs (Thespian retries one to a killed actor for
35 s) holds only the outbox's thread, never the caller that queued the message."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from host import outbox as outbox_module
from host.connection import State
from host.outbox import Outbox
from tests.conftest import wait_until


class StuckEndpoint:
    def __init__(self):
        self.told: list[tuple[object, object]] = []
        self.release = threading.Event()

    def tell(self, address, message):
        self.told.append((address, message))
        self.release.wait(5)  # as a tell behind a transmit to a dead actor

    def listen(self, timeout):
        return None


def fake_system(endpoint, epoch=1):
    conn = SimpleNamespace(state=State.CONNECTED, epoch=epoch)
    return SimpleNamespace(_conn=conn, _endpoint=lambda e: endpoint)


def test_a_stuck_tell_never_holds_the_caller(monkeypatch):
    monkeypatch.setattr(outbox_module, "CAPACITY", 3)
    endpoint = StuckEndpoint()
    box = Outbox(fake_system(endpoint))
    try:
        started = time.monotonic()
        for n in range(10):
            box.put(1, "router", n)
        took = time.monotonic() - started
        assert took < 0.5, f"put waited {took:.2f} s"
        wait_until(lambda: endpoint.told, timeout=2)
        assert box.dropped >= 10 - 3 - 1, "what did not fit was counted as dropped"
        endpoint.release.set()
        wait_until(lambda: box.sent == 10 - box.dropped, timeout=2)
    finally:
        endpoint.release.set()
        box._system._conn.state = State.CLOSED
        box.stop()


def test_messages_of_a_runtime_start_that_went_away_are_dropped():
    endpoint = StuckEndpoint()
    endpoint.release.set()
    system = fake_system(endpoint, epoch=2)
    box = Outbox(system)
    try:
        box.put(1, "old-router", "stale")
        box.put(2, "router", "fresh")
        box.put(2, None, "no address: nothing queued")
        wait_until(lambda: box.sent == 1 and box.dropped == 1, timeout=2)
        assert endpoint.told == [("router", "fresh")]
    finally:
        system._conn.state = State.CLOSED
        box.stop()
