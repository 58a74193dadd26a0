"""Nothing outside the supervision tree stays broken (issue 12): kill -9 of the supervisor,
of Thespian's admin, of the router, of the context actor between applying a write and
acknowledging it, and of the launcher, under 4 callers sending tasks and SQLite-backed
context writes. Each test prints its counts by outcome and the time to serve again, and
asserts the goals: the same handle serves again within 2 s; no call past its timeout; no
untyped exception; no acknowledged write lost; a retried write applies once."""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from actors.context_actor import TEST_KILL_AFTER_WRITE_ENV
from host import cli as run_py
from host.cli import with_daemon_defaults
from host.launcher import runtime_processes, start_launcher, stop_launcher
from host.system import REPLY_MARGIN_S, ROUTER, ServiceSystem
from host.toml_config import load_config, read_config
from messages import Task, TaskResult
from messages.context import ContextFilter, ContextGap, ContextItem
from messages.errors import ErrorCode, GrymError, is_retryable
from messages.service import ServiceStatus
from tests.conftest import wait_until
from tests.integration.test_daemon_cli import write_config

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
TASK_TIMEOUT_S = 2.0
WRITE_TIMEOUT_S = 3.0
SLACK_S = 0.5          # scheduling on a loaded 2-core machine
SERVE_AGAIN_S = 2.0    # the goal
AFTER_KILL_S = 2.5     # load kept up after the kill


@dataclass
class Call:
    what: str          # a task type, or "write"
    outcome: str       # ok, an error code, or "untyped"
    started: float
    ended: float
    limit_s: float     # the call's own timeout
    incarnation: str   # the handle's, when the call ended
    retryable: bool = False


class Load:
    """Three callers routing tasks (of ``task_types``, one each) and one writer of
    context items, on one handle."""

    def __init__(self, system: ServiceSystem, task_types: tuple[str, ...] = ("echo",) * 3,
                 task_timeout_s: float = TASK_TIMEOUT_S, writer: bool = True,
                 via_router: bool = False):
        self.system, self.task_types, self.task_timeout_s = system, task_types, task_timeout_s
        self.via_router = via_router  # as an external actor would: not the host's fast path
        self.stop = threading.Event()
        self.calls: list[Call] = []
        self.acked: list[tuple[str, int]] = []
        self.untyped: list[BaseException] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._task, args=(n,)) for n in range(3)]
        if writer:
            self.threads.append(threading.Thread(target=self._write))

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _record(self, call: Call) -> None:
        with self.lock:
            self.calls.append(call)

    def _task(self, n: int) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            started, outcome, retry = time.monotonic(), "untyped", False
            task = Task(id=f"c{n}-{i}", type=self.task_types[n], data=i,
                        timeout_s=self.task_timeout_s)
            try:
                r = self._routed(task) if self.via_router else self.system.router.route_task(task)
                outcome = "ok" if r.ok else r.error.code.value
                retry = r.error is not None and is_retryable(r.error)
            except GrymError as exc:
                outcome, retry = exc.code.value, is_retryable(exc)
            except BaseException as exc:  # noqa: BLE001 - what the goal counts
                self.untyped.append(exc)
            self._record(Call(self.task_types[n], outcome, started, time.monotonic(),
                              self.task_timeout_s + REPLY_MARGIN_S, self.system.info.incarnation,
                              retry))
            time.sleep(0.002)

    def _routed(self, task: Task) -> TaskResult:
        return self.system.ask(ROUTER, task, self.task_timeout_s + REPLY_MARGIN_S,
                               expect=lambda r: isinstance(r, TaskResult) and r.task_id == task.id)

    def _write(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            started, outcome, retry = time.monotonic(), "untyped", False
            try:
                ack = self.system.context.store(
                    ContextItem(type="prompt", content={"i": i}, source="chaos"),
                    timeout=WRITE_TIMEOUT_S)
                outcome = "ok"
                with self.lock:
                    self.acked.append((ack.item_id, i))
            except GrymError as exc:
                outcome, retry = exc.code.value, is_retryable(exc)
            except BaseException as exc:  # noqa: BLE001
                self.untyped.append(exc)
            self._record(Call("write", outcome, started, time.monotonic(), WRITE_TIMEOUT_S,
                              self.system.info.incarnation, retry))
            time.sleep(0.005)

    # -- figures ----------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(f"{c.what}:{c.outcome}" for c in self.calls).items()))

    def late(self) -> list[Call]:
        return [c for c in self.calls if c.ended - c.started > c.limit_s + SLACK_S]

    def stranded(self, killed_at: float) -> list[Call]:
        """The calls in flight at the kill."""
        return [c for c in self.calls if c.started < killed_at < c.ended]

    def served_again_s(self, killed_at: float, old_incarnation: str | None = None) -> float:
        """From the kill to the first task answered ok afterwards (by a new start of the
        runtime, when ``old_incarnation`` is given)."""
        ok = [c.ended for c in self.calls if c.what != "write" and c.outcome == "ok"
              and c.ended > killed_at
              and (old_incarnation is None or c.incarnation != old_incarnation)]
        return (min(ok) - killed_at) if ok else float("inf")


def report(title: str, load: Load, killed_at: float, back_s: float, system: ServiceSystem) -> None:
    failed = [c for c in load.calls if c.outcome not in ("ok", "untyped")]
    for c in failed:
        print(f"  {c.what} {c.outcome} (retryable {c.retryable}): sent {c.started - killed_at:+.3f} s "
              f"from the kill, answered after {c.ended - c.started:.3f} s")
    print(f"\n{title}: {len(load.calls)} calls, by outcome {load.counts()}; "
          f"failed calls retryable: {sum(c.retryable for c in failed)}/{len(failed)}; "
          f"served again {back_s:.3f} s after the kill; longest call "
          f"{max(c.ended - c.started for c in load.calls):.3f} s; "
          f"untyped exceptions {len(load.untyped)}; acknowledged writes {len(load.acked)}; "
          f"handle: {({k: v for k, v in system.client_metrics().items() if k != 'retry_policy'})}")


def assert_goals(load: Load, system: ServiceSystem, back_s: float | None) -> None:
    assert not load.untyped, load.untyped[:3]
    assert not load.late(), f"calls past their timeout: {load.late()[:3]}"
    outcomes = {c.outcome for c in load.calls}
    assert ErrorCode.TIMEOUT.value not in outcomes, load.counts()
    assert outcomes <= {"ok", ErrorCode.SERVICE_UNAVAILABLE.value,
                        ErrorCode.EXECUTION_ERROR.value}, load.counts()
    assert back_s is None or back_s < SERVE_AGAIN_S, f"served again only after {back_s:.2f} s"
    for item_id, i in load.acked:  # SQLite: every acknowledged write is still there
        assert system.context.retrieve(item_id).content == {"i": i}


SLOW = {"kind": "echo", "eager": True, "delay_ms": 400, "max_queue": 64}
SLOW_TABLE = """
[services.slow]
kind = "echo"
eager = true
delay_ms = 400
max_queue = 64

[routes]
echo = "echo"
slow = "slow"
"""


def sqlite_config(tmp_path, **services) -> dict:
    return {"services": {"echo": {"kind": "echo", "eager": True}, **services},
            "routes": {name: name for name in ("echo", *services)},
            "context": {"persistence": "sqlite", "path": str(tmp_path / "c.db")}}


def victim_pid(system: ServiceSystem, victim: str) -> int:
    info = system.refresh()
    if victim == "supervisor":
        return info.pid
    if victim == "admin":
        return info.admin_pid
    # A core child's pid is known from its first heartbeat answer on.
    return wait_until(lambda: next(c.pid for c in system.refresh().core if c.name == victim),
                      timeout=5)


# -- the runtime comes back, and the handle follows it -------------------------------------------
def kill_runtime_under_load(system: ServiceSystem, victim: str, title: str) -> None:
    """Two callers of a fast service, one of a slow one (so that calls are in flight at
    the kill), one writer."""
    old = system.info.incarnation
    with Load(system, task_types=("echo", "echo", "slow")) as load:
        time.sleep(1.0)
        os.kill(victim_pid(system, victim), signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(AFTER_KILL_S)
    back_s = load.served_again_s(killed_at, old)
    report(title, load, killed_at, back_s, system)
    stranded = [c for c in load.stranded(killed_at) if c.outcome != "ok"]
    print(f"calls in flight at the kill that failed: {len(stranded)}, the last ended "
          f"{max((c.ended - killed_at for c in stranded), default=0):.3f} s after the kill")
    assert system.info.incarnation != old, "the handle re-joined a new start of the runtime"
    assert system.client_metrics()["rejoins"] == 1
    assert all(c.retryable and c.ended - killed_at < 1.0 for c in stranded), \
        "calls in flight end at once, with a retryable error"
    assert_goals(load, system, back_s)


@pytest.mark.parametrize("victim", ["supervisor", "admin"])
def test_an_embedded_runtime_comes_back_and_its_handle_follows(start_system, tmp_path, victim):
    system = start_system(sqlite_config(tmp_path, slow=SLOW))
    events = []
    system.health.on("runtime_restarted", events.append)
    kill_runtime_under_load(system, victim, f"embedded, kill -9 of the {victim}")
    wait_until(lambda: events, timeout=2)
    assert events[0].kind.value == "runtime_restarted"


@contextmanager
def daemon(tmp_path, extra_toml: str = ""):
    """What ``run.py start --config F`` starts (a detached launcher, with the daemon's
    defaults: metrics and the HTTP API on), without a CLI process around it:
    (its settings, the launcher process, its metrics port)."""
    config, logs, metrics_port = write_config(tmp_path, extra_toml)
    raw, settings = with_daemon_defaults(read_config(config)), load_config(config)
    marker = str(logs / "config.json")
    launcher, status = start_launcher(raw, logs, cwd=tmp_path, timeout_s=60, detach=True)
    try:
        assert status.get("ready"), status
        yield settings, launcher, metrics_port
    finally:
        stop_launcher(launcher)
        for proc in runtime_processes(marker):
            proc.kill()


def test_a_daemon_comes_back_and_a_joined_handle_follows(tmp_path):
    with daemon(tmp_path, SLOW_TABLE) as (settings, launcher, metrics_port):
        with ServiceSystem.connect(settings.system.admin_port,
                                   secret_file=settings.secret_file()) as system:
            kill_runtime_under_load(system, "supervisor", "daemon, kill -9 of the supervisor")
        # The launcher's own handle (the HTTP API's) counts its calls on /metrics too.
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            assert "grym_client_rejoins_total" in r.read().decode()
        # The new runtime's processes, forked from the launcher, hold no copy of the
        # metrics port's sockets (the port would outlive the launcher).
        holders = [p.pid for p in runtime_processes(str(settings.log_dir() / "config.json"))
                   if p.pid != launcher.pid and any(
                       c.laddr and c.laddr.port == metrics_port for c in p.net_connections("inet"))]
        assert holders == []


# -- restarted core actors do not strand their callers ------------------------------------------------
def test_calls_to_a_killed_router_end_within_a_second(start_system, tmp_path):
    system = start_system(sqlite_config(tmp_path, slow=SLOW))
    with Load(system, task_types=("slow",) * 3, task_timeout_s=10.0, via_router=True) as load:
        time.sleep(0.6)
        os.kill(victim_pid(system, "router"), signal.SIGKILL)
        killed_at = time.monotonic()
        time.sleep(AFTER_KILL_S)
    stranded = load.stranded(killed_at)
    longest = max(c.ended - killed_at for c in stranded)
    back_s = load.served_again_s(killed_at)  # the slow service first works off its queue
    report("kill -9 of the router", load, killed_at, back_s, system)
    print(f"calls in flight at the kill: {len(stranded)}, the last ended {longest:.3f} s after it")
    assert stranded and longest <= 1.0, "no call waits more than 1 s past the kill"
    assert all(c.retryable for c in stranded if c.what != "write" and c.outcome != "ok")
    assert_goals(load, system, None)


def test_a_write_whose_acknowledgement_was_lost_applies_once(start_system, tmp_path, monkeypatch):
    key = "chaos-write-1"
    monkeypatch.setenv(TEST_KILL_AFTER_WRITE_ENV, key)  # the runtime inherits it
    system = start_system(sqlite_config(tmp_path))
    before = victim_pid(system, "context")
    with Load(system, writer=False) as load:
        time.sleep(0.3)
        started = time.monotonic()
        ack = system.context.store(ContextItem(type="once", content={"n": 1}, source="chaos"),
                                   idempotency_key=key)
        took = time.monotonic() - started
        time.sleep(0.5)
    items = system.context.query(ContextFilter(types=frozenset({"once"})))
    metrics = system.client_metrics()
    print(f"\nkill -9 of the context actor between applying a write and acknowledging it: the "
          f"write was answered after {took:.3f} s with {ack}; items stored: {items.total}; "
          f"retries {metrics['retries']}; tasks meanwhile {load.counts()}")
    assert victim_pid(system, "context") != before, "the fault hook killed the context actor"
    assert metrics["retries"].get("store", 0) >= 1
    assert items.total == 1 and items.items[0].id == ack.item_id and ack.version == items.items[0].version
    assert took < 2.0 and not load.untyped and not load.late()


# -- subscriptions that survive ------------------------------------------------------------------------
@pytest.mark.parametrize("victim", ["context", "supervisor"])
def test_a_context_subscription_resumes_with_every_change_or_a_gap(start_system, tmp_path, victim):
    system = start_system(sqlite_config(tmp_path))
    acked = []
    with system.context.subscribe(ContextFilter(types=frozenset({"prompt"}))) as sub:
        def write(n: int) -> None:
            for i in range(n):
                acked.append(system.context.store(ContextItem(type="prompt", content={"i": i},
                                                              source="sub"), timeout=5).seq)
        write(20)
        os.kill(victim_pid(system, victim), signal.SIGKILL)
        write(10)  # to the old actor (alive until the launcher ends it), or the new one
        wait_until(lambda: sub.resumes, timeout=5)
        write(10)
        seen, gaps = [], []
        while (not seen or seen[-1] < acked[-1]) and (change := sub.next(timeout=3)) is not None:
            (gaps if isinstance(change, ContextGap) else seen).append(change)
            if not isinstance(change, ContextGap):
                seen[-1] = change.seq
    missing = sorted(set(acked) - set(seen))
    print(f"\nsubscription across a kill -9 of the {victim}: {len(acked)} writes, {len(seen)} "
          f"changes seen, gap markers {[(g.after_seq, g.seq) for g in gaps]}, resumed "
          f"{sub.resumes} time(s), missing {missing}")
    assert sub.resumes == 1, "subscribed again once"
    assert seen == sorted(set(seen)), "in order, each once"
    assert all(any(g.after_seq < m <= g.seq for g in gaps) for m in missing), \
        "every change, or an explicit gap marker: never a silent hole"
    resumed_at = max((g.seq for g in gaps), default=0)
    assert {a for a in acked if a > resumed_at} <= set(seen), "after the resume, every change"


# -- a failed service, brought back by an operator ------------------------------------------------------
def test_run_py_restart_brings_a_failed_service_back(start_system, capsys):
    system = start_system({"services": {
        "echo": {"kind": "echo", "eager": True},
        "flaky": {"kind": "echo", "eager": True, "max_restarts": 0}},
        "routes": {"echo": "echo", "flaky": "flaky"}})
    crash = system.router.route_task(Task(id="crash", type="flaky", data=1,
                                          metadata={"inject": "crash"}))
    assert not crash.ok
    wait_until(lambda: system.health.statuses()["flaky"] is ServiceStatus.FAILED, timeout=5)
    port = ["--port", str(system.admin_port)]
    assert run_py.main(["status", "--json", *port]) == 0
    rows = {r["service"]: r for r in json.loads(capsys.readouterr().out)["services"]}
    assert rows["flaky"]["state"] == "failed" and rows["flaky"]["last_error"]
    assert rows["echo"]["last_error"] is None
    started = time.monotonic()
    assert run_py.main(["restart", "flaky", *port]) == 0
    restarted = capsys.readouterr().out
    back_s = time.monotonic() - started
    assert system.router.route_task(Task(id="again", type="flaky", data=2)).ok
    assert run_py.main(["status", *port]) == 0
    table = capsys.readouterr().out
    print(f"\nrun.py restart flaky: {restarted.strip()} ({back_s:.3f} s)\n{table}")
    assert "last_error" in table.splitlines()[0]
    assert "process" in next(line for line in table.splitlines() if line.startswith("flaky"))
    assert run_py.main(["restart", "flaky", *port]) == 1  # running now: refused
    assert "CONFLICT" in capsys.readouterr().err


# -- the launcher itself ----------------------------------------------------------------------------------
def test_a_killed_launcher_leaves_nothing_serving_and_a_new_start_works_at_once(tmp_path):
    """systemd (Restart=on-failure) restarts a killed launcher; the runtime it leaves
    ends itself, so that the new one can start on the same port at once."""
    with daemon(tmp_path) as (settings, launcher, _):
        port, marker = settings.system.admin_port, str(tmp_path / "logs" / "config.json")
        assert len(runtime_processes(marker)) >= 5
        launcher.kill()
        launcher.wait(5)
        killed_at = time.monotonic()
        wait_until(lambda: not runtime_processes(marker), timeout=5, interval=0.02)
        gone_s = time.monotonic() - killed_at
        raw = with_daemon_defaults(read_config(tmp_path / "grym.toml"))
        again, status = start_launcher(raw, Path(marker).parent, cwd=tmp_path, timeout_s=60,
                                       detach=True)
        try:
            started_s = time.monotonic() - killed_at - gone_s
            print(f"\nkill -9 of the launcher: every process of its runtime gone after "
                  f"{gone_s:.3f} s; a new start was ready {started_s:.3f} s later")
            assert status.get("ready"), status
            with ServiceSystem.connect(port, secret_file=settings.secret_file()) as system:
                assert system.router.route_task(Task(id="t", type="echo", data=1)).ok
        finally:
            stop_launcher(again)
        assert runtime_processes(marker) == []
