"""Changing a running system without stopping it, on real multiprocTCPBase runtimes:
versions side by side, rolling updates under load (a new wav2vec2 checkpoint, new
code of a kind), and applies that must change nothing."""
from __future__ import annotations

import os
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from messages import ErrorCode, Task
from messages.errors import ConfigError, GrymError, InitError
from messages.system import HealthEvent
from services.wav2vec2.checkpoint import make_checkpoint
from tests.conftest import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]
CALLERS = 4


class Load:
    """Callers sending tasks back to back until stopped; every result with the time it
    was sent and how long it took."""

    def __init__(self, system: Any, make_task: Callable[[int, int], Task], callers: int = CALLERS):
        self.results: list[tuple[float, float, Any]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._call, args=(system, make_task, i))
                         for i in range(callers)]
        for thread in self._threads:
            thread.start()

    def _call(self, system: Any, make_task: Callable[[int, int], Task], caller: int) -> None:
        n = 0
        while not self._stop.is_set():
            sent = time.monotonic()
            result = system.router.route_task(make_task(caller, n))
            with self._lock:
                self.results.append((sent, time.monotonic() - sent, result))
            n += 1

    def stop(self) -> list[tuple[float, float, Any]]:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return self.results

    def between(self, start: float, end: float) -> list[tuple[float, float, Any]]:
        with self._lock:
            return [r for r in self.results if start <= r[0] < end]


def p99_ms(results: list[tuple[float, float, Any]]) -> float:
    return float(np.percentile([latency for _, latency, _ in results], 99)) * 1000


def failures(results: list[tuple[float, float, Any]]) -> list[Any]:
    return [r.error for _, _, r in results if not r.ok]


# A service kind written to a folder on the path, as a package's new version would be.
KIND = '''
import time
from dataclasses import dataclass

from messages.errors import InitError
from services.model_service import ModelService


@dataclass(frozen=True)
class Settings:
    delay_ms: float = 1.0
    fail_init: bool = False


class Answer(ModelService):
    kind = "answer"
    task_types = frozenset({{"answer"}})
    Settings = Settings

    def initialize(self):
        if self.settings.fail_init:
            raise InitError("this version cannot start")
        super().initialize()

    def execute(self, task):
        time.sleep(self.settings.delay_ms / 1000)
        return {{"code": {code!r}, "service": self.name}}
'''


@pytest.fixture
def kind_folder(tmp_path, monkeypatch) -> Path:
    """A folder on the path of this process and of the runtime's (PYTHONPATH)."""
    folder = tmp_path / "kinds"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [
        str(folder), os.environ.get("PYTHONPATH")])))
    return folder


def write_kind(folder: Path, module: str, code: str) -> str:
    (folder / f"{module}.py").write_text(textwrap.dedent(KIND.format(code=code)))
    return f"{module}:Answer"


def answer_task(caller: int, n: int, **metadata: Any) -> Task:
    return Task(id=f"c{caller}-{n}", type="answer", data=n, metadata=metadata)


# -- versions side by side -------------------------------------------------------------------
def test_two_versions_side_by_side_split_by_weight_or_pinned(start_system, kind_folder):
    kind = write_kind(kind_folder, "answer_sxs", "same code")
    system = start_system({
        "services": {"ans": {"kind": kind, "version": "1", "eager": True},
                     "ans@2": {"kind": kind, "eager": True}},
        "routes": {"answer": {"ans@1": 3, "ans@2": 1}}})
    served = Counter(system.router.route_task(answer_task(0, n)).unwrap()["service"]
                     for n in range(40))
    assert served == {"ans@1": 30, "ans@2": 10}
    pinned = {system.router.route_task(answer_task(0, n, version="2")).unwrap()["service"]
              for n in range(5)}
    assert pinned == {"ans@2"}
    unknown = system.router.route_task(answer_task(0, 0, version="7"))
    assert unknown.error.code is ErrorCode.SERVICE_NOT_FOUND
    # Each version is its own service: processes, health, metrics.
    infos = {s.name: s for s in system.services()}
    assert {n: i.version for n, i in infos.items()} == {"ans@1": "1", "ans@2": "2"}
    assert infos["ans@1"].pid != infos["ans@2"].pid
    assert set(system.health.statuses()) == {"ans@1", "ans@2"}
    wait_until(lambda: {m.name: m.requests for m in system.metrics()}.get("ans@2", 0) >= 15, 5)
    # Weights change in place: no process starts or stops.
    report = system.apply({"services": {"ans": {"kind": kind, "version": "1", "eager": True},
                                        "ans@2": {"kind": kind, "eager": True}},
                           "routes": {"answer": {"ans@1": 0, "ans@2": 1}}})
    assert [(s.action, s.target) for s in report.steps] == [("route", "answer")]
    assert {system.router.route_task(answer_task(0, n)).unwrap()["service"]
            for n in range(10)} == {"ans@2"}
    assert {s.name: s.pid for s in system.services()} == {n: i.pid for n, i in infos.items()}


# -- new code without a supervisor restart ----------------------------------------------------
def test_new_code_of_a_kind_rolls_out_under_load(start_system, kind_folder):
    kind = write_kind(kind_folder, "answer_hot", "v1")
    config = {"services": {"ans": {"kind": kind, "version": "1", "eager": True}}}
    system = start_system(config)
    supervisor_pid = system.info.pid
    load = Load(system, answer_task)
    time.sleep(0.5)
    write_kind(kind_folder, "answer_hot", "version 2")  # a new release of the kind's code
    report = system.apply({"services": {"ans": {"kind": kind, "version": "2", "eager": True}}})
    time.sleep(0.5)
    results = load.stop()
    assert failures(results) == []
    codes = [r.data["code"] for _, _, r in sorted(results, key=lambda r: r[0])]
    assert codes[0] == "v1" and codes[-1] == "version 2"
    assert "v1" not in codes[codes.index("version 2"):]  # traffic moved once, for good
    assert [(s.action, s.target) for s in report.steps] == [
        ("start", "ans@2"), ("route", "answer"), ("stop", "ans@1")]
    assert [s.name for s in system.services()] == ["ans@2"]
    assert system.refresh().pid == supervisor_pid  # the supervisor was not restarted
    print(f"\nnew code: {len(results)} tasks under {CALLERS} callers, 0 failed")


# -- an apply that must change nothing ----------------------------------------------------------
def test_a_bad_apply_leaves_the_running_config_and_every_service_untouched(start_system,
                                                                           kind_folder):
    kind = write_kind(kind_folder, "answer_bad", "v1")
    config = {"services": {"ans": {"kind": kind, "eager": True},
                           "echo": {"kind": "echo", "eager": True}}}
    system = start_system(config)
    events: list[HealthEvent] = []
    system.health.on("rollout_failed", events.append)
    before = [(s.name, s.pid, s.generation, s.status) for s in system.services()]
    routes = dict(system.info.routes)

    def untouched() -> None:
        assert [(s.name, s.pid, s.generation, s.status) for s in system.services()] == before
        assert dict(system.refresh().routes) == routes

    with pytest.raises(ConfigError) as bad_key:  # invalid: refused before anything is asked
        system.apply({"services": {"ans": {"kind": kind, "eager": True, "no_such": 1}}})
    assert bad_key.value.details["key"] == "services.ans.no_such"
    with pytest.raises(ConfigError) as fixed:  # valid, but not a change a running system takes
        system.apply({**config, "system": {"start_method": "spawn"}})
    assert fixed.value.details["key"] == "system.start_method"
    untouched()
    # A new version that cannot start, while callers keep the old one busy.
    load = Load(system, answer_task)
    with pytest.raises(InitError) as failed:
        system.apply({"services": {"ans": {"kind": kind, "eager": True, "fail_init": True},
                                   "echo": {"kind": "echo", "eager": True}}})
    time.sleep(0.3)
    results = load.stop()
    assert "this version cannot start" in str(failed.value)
    assert results and failures(results) == []
    untouched()
    assert system.info.last_apply.startswith("failed, nothing changed")
    wait_until(lambda: events, 5)
    assert events[0].service == "ans" and "cannot start" in events[0].reason


# -- the goal: a rolling update of wav2vec2 under steady load -------------------------------------
def w2v(model: Path) -> dict[str, Any]:
    return {"kind": "wav2vec2", "model": str(model), "local_files_only": True,
            "torch_threads": 1, "eager": True}


def tone(seconds: float = 1.0, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def test_rolling_update_of_wav2vec2_under_load(start_system, tmp_path):
    first = make_checkpoint(tmp_path / "first", "tiny", seed=0)
    second = make_checkpoint(tmp_path / "second", "tiny", seed=1)
    system = start_system({"services": {"asr": w2v(first)}})
    old = system.services()[0]
    audio = tone()
    load = Load(system, lambda c, n: Task(id=f"c{c}-{n}", type="speech-to-text", data=audio))
    time.sleep(0.5)                      # past the first tasks
    steady_from = time.monotonic()
    time.sleep(2.5)
    began = time.monotonic()
    report = system.apply({"services": {"asr": w2v(second)}})
    ended = time.monotonic()
    time.sleep(0.3)
    results = load.stop()
    steady, during = load.between(steady_from, began), load.between(began, ended)
    steady_p99, update_p99 = p99_ms(steady), p99_ms(during)
    print(f"\nrolling update of wav2vec2 (tiny) under {CALLERS} callers: {len(results)} tasks, "
          f"{len(failures(results))} failed; steady p99 {steady_p99:.1f} ms ({len(steady)} "
          f"tasks), during the update p99 {update_p99:.1f} ms ({len(during)} tasks, "
          f"{(ended - began) * 1000:.0f} ms)")
    assert failures(results) == []
    assert [(s.action, s.target) for s in report.steps] == [("replace", "asr")]
    assert update_p99 <= 2 * steady_p99
    new = system.services()[0]
    assert (new.generation, new.restarts) == (old.generation + 1, 0) and new.pid != old.pid
    texts = [r.data["text"] for _, _, r in sorted(results, key=lambda r: r[0])]
    assert texts[0] != texts[-1]  # the other checkpoint answers now


def running_pid(system: Any) -> int | None:
    """The supervisor's pid, or None while the runtime is being started again."""
    try:
        return system.refresh(timeout=2.0).pid
    except GrymError:
        return None


# -- the daemon: run.py apply, and SIGHUP ---------------------------------------------------------
def test_run_py_apply_and_sighup_change_the_running_daemon(tmp_path):
    import signal

    from host.system import ServiceSystem
    from host.toml_config import load_config
    from tests.integration.test_daemon_cli import cli, stop_and_sweep, write_config

    config, logs, _ = write_config(tmp_path)
    more = '\n[services.more]\nkind = "echo"\neager = true\n\n[routes]\necho = "echo"\n'
    try:
        cli("start", "--config", str(config))
        settings = load_config(config)
        system = ServiceSystem.connect(settings.system.admin_port,
                                       secret_file=settings.secret_file())
        services = lambda: [s.name for s in system.services()]  # noqa: E731
        new = tmp_path / "new.toml"
        new.write_text(config.read_text() + more)
        planned = cli("apply", str(new), "--dry-run").stdout
        assert "start    more" in planned and "dry run: nothing changed" in planned
        assert services() == ["echo"]
        assert "applied 1 step(s)" in cli("apply", str(new)).stdout
        assert services() == ["echo", "more"]
        bad = tmp_path / "bad.toml"
        bad.write_text(config.read_text().replace('kind = "echo"', 'kind = "echo"\nbogus = 1'))
        refused = cli("apply", str(bad), check=False)
        assert refused.returncode == 2 and "services.echo.bogus" in refused.stderr
        # Should the launcher have to start the runtime again, it starts the applied config.
        supervisor_pid = system.info.pid
        os.kill(supervisor_pid, signal.SIGKILL)
        wait_until(lambda: running_pid(system) not in (None, supervisor_pid), 60, interval=0.2)
        assert services() == ["echo", "more"]
        # SIGHUP: the daemon applies its own file again (which has no "more", but a "third").
        config.write_text(config.read_text() + more.replace("more", "third"))
        os.kill(int((logs / "grym.pid").read_text()), signal.SIGHUP)
        wait_until(lambda: services() == ["echo", "third"], 30, interval=0.2)
        system.close()
    finally:
        stop_and_sweep(config, logs)
