"""More than one host, on one machine: the runtime's leader and members started with
``run.py join`` on loopback ports, each its own multiprocTCPBase actor system in the
leader's Thespian convention. A CPU member says ``gpu = true`` through the test-only
override (runtime.capabilities.TEST_OVERRIDE_ENV)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from host.cli import main as cli
from host.launcher import alive
from host.member import admin_pid_on
from messages import ErrorCode, Task
from messages.errors import GrymError, ServiceUnavailable
from runtime.capabilities import TEST_OVERRIDE_ENV
from tests.conftest import free_port, listening, wait_until
from tests.load import Callers

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
ROOT = Path(__file__).resolve().parents[2]
TASK_TIMEOUT_S = 2.0


class Member:
    """One ``run.py join`` process, and the actor system it started."""

    def __init__(self, leader_port: int, name: str, gpu: bool, workdir: Path,
                 start_method: str = "fork"):
        self.name, self.port, self.workdir = name, free_port(), workdir
        self.ready = workdir / f"{name}.ready"
        self.ready.unlink(missing_ok=True)
        config = workdir / f"{name}.toml"  # its [system] table: logs in the test's folder
        config.write_text(f'[system]\nlog_dir = "{workdir / name}"\n'
                          f'start_method = "{start_method}"\n')
        env = {**os.environ, TEST_OVERRIDE_ENV: json.dumps({"gpu": gpu, "cuda_devices": int(gpu)})}
        with open(workdir / f"{name}.out", "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "run.py", "join", f"127.0.0.1:{leader_port}", "--port",
                 str(self.port), "--name", name, "--ready-file", str(self.ready),
                 "--config", str(config)],
                cwd=ROOT, env=env, stdout=out, stderr=out, stdin=subprocess.DEVNULL)
        self.admin: psutil.Process | None = None

    def wait_ready(self) -> "Member":
        wait_until(lambda: self.ready.exists() or self.proc.poll() is not None, timeout=30)
        assert self.ready.exists(), (self.workdir / f"{self.name}.out").read_text()[-2000:]
        self.admin = psutil.Process(admin_pid_on(self.port, besides=self.proc.pid))
        return self

    def processes(self) -> list[psutil.Process]:
        """The join process, its admin and every actor the admin started."""
        found = [psutil.Process(self.proc.pid)] if self.proc.poll() is None else []
        try:
            found += [self.admin, *self.admin.children(recursive=True)] if self.admin else []
        except psutil.NoSuchProcess:
            pass
        return found

    def leave(self) -> int:
        self.proc.terminate()  # a graceful leave: Thespian deregisters it from the convention
        return self.proc.wait(20)

    def kill(self) -> None:
        """kill -9 of every process of the member, as when its host dies."""
        for proc in self.processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
        self.proc.wait(5)


@pytest.fixture
def join(tmp_path):
    started: list[Member] = []

    def start(system, start_method: str = "fork", **gpus: bool) -> list[Member]:
        """Members named and with a GPU or not as ``gpus`` says, started side by side."""
        members = [Member(system.admin_port, name, gpu, tmp_path, start_method)
                   for name, gpu in gpus.items()]
        started.extend(members)
        return [m.wait_ready() for m in members]

    yield start
    processes = [p for m in started for p in m.processes()]
    for member in started:
        if member.proc.poll() is None:
            member.proc.terminate()
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not any(alive(p.pid) for p in processes), timeout=10)
    left = [p for p in processes if alive(p.pid)]
    for proc in left:
        proc.kill()
    assert not left, f"member processes left behind: {left}"


def where(system) -> dict[str, tuple[str, str | None, int | None]]:
    return {s.name: (s.status.value, s.member, s.pid) for s in system.services()}


def test_a_service_requiring_a_gpu_runs_on_the_member_that_has_one(start_system, join):
    system = start_system({"services": {
        "cpu": {"kind": "echo", "eager": True},
        "gpu": {"kind": "echo", "eager": True, "requires": {"gpu": True}},
        "big": {"kind": "echo", "eager": True, "requires": {"cuda_devices": 4}}},
        "routes": {"echo": "cpu"}})
    leader = system.info.members[0].name
    assert where(system)["gpu"][:2] == ("failed", None)  # no member yet: failed, not waiting
    m1, m2 = join(system, m1=True, m2=False)
    wait_until(lambda: where(system)["gpu"][0] == "online", timeout=15)
    placed = where(system)
    assert placed["cpu"][:2] == ("online", leader)
    assert placed["gpu"][:2] == ("online", "m1")
    # There, and nowhere else: its process is one of m1's actors, none of m2's or the leader's.
    gpu_pid = placed["gpu"][2]
    assert gpu_pid in {p.pid for p in m1.admin.children(recursive=True)}
    assert gpu_pid not in {p.pid for p in m2.processes()}
    assert gpu_pid not in {p.pid for p in system.processes()}
    assert system.get_service("gpu").execute_task(Task(id="t", type="echo", data=7)).unwrap() == 7
    # Nobody has four CUDA devices: failed, with the reason for each member.
    big = next(s for s in system.services() if s.name == "big")
    assert big.status.value == "failed"
    assert "m1: cuda_devices = 4 wanted, it has 1" in big.last_error
    with pytest.raises(ServiceUnavailable, match="cuda_devices"):
        system.get_service("big")
    # run.py status shows where each runs, and the members.
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli(["status", "--port", str(system.admin_port), "--json"]) == 0
    status = json.loads(out.getvalue())
    assert {r["service"]: r["member"] for r in status["services"]} == {
        "cpu": leader, "gpu": "m1", "big": None}
    rows = [(m["member"], m["role"], m["gpu"], m["services"]) for m in status["members"]]
    assert rows[0] == (leader, "leader", False, "context, router, cpu")  # the leader first
    assert sorted(rows[1:]) == [("m1", "member", True, "gpu"), ("m2", "member", False, "")]
    # m1 leaves: nobody else has a GPU, so the service fails with the reason ...
    assert m1.leave() == 0
    wait_until(lambda: where(system)["gpu"][0] == "failed", timeout=5)
    gpu = next(s for s in system.services() if s.name == "gpu")
    assert "no member of the convention meets requires {gpu = true}" in gpu.last_error
    # ... and starts again where it can as soon as a member with a GPU joins.
    join(system, m3=True)
    wait_until(lambda: where(system)["gpu"][:2] == ("online", "m3"), timeout=15)


def test_kill_9_of_a_member_under_load(start_system, join):
    system = start_system({"services": {
        "gpu": {"kind": "echo", "eager": True, "requires": {"gpu": True}}},
        "routes": {"echo": "gpu"}})
    m1, m2 = join(system, m1=True, m2=True)
    wait_until(lambda: where(system)["gpu"][0] == "online", timeout=15)
    members = {"m1": m1, "m2": m2}
    victim = members[where(system)["gpu"][1]]
    with Callers(system, 4, timeout_s=TASK_TIMEOUT_S, pause_s=0.005) as load:
        time.sleep(0.5)
        victim.kill()
        killed = time.monotonic()
        wait_until(lambda: any(c.began > killed and c.result.ok for c in load.calls),
                   timeout=10, interval=0.01)
        back_in = min(c.ended for c in load.calls if c.began > killed and c.result.ok) - killed
        time.sleep(0.5)
    calls = load.calls
    now = where(system)["gpu"]
    late = [c.took for c in calls if c.took > TASK_TIMEOUT_S + 0.5]
    failed = load.failed()
    event = next(e for e in reversed(system.health.events()) if e.kind.value == "service_restarted")
    print(f"\nmember {victim.name} killed under load: serving again on {now[1]} after "
          f"{back_in * 1000:.0f} ms; {len(calls)} calls, {len(failed)} failed "
          f"({sorted({r.error.code.value for r in failed})}), {len(late)} past their timeout; "
          f"found by: {event.reason}")
    assert now[0] == "online" and now[1] != victim.name
    assert back_in < 2.0
    assert not late, f"calls past their timeout: {late}"
    assert {r.error.code for r in failed} <= {ErrorCode.SERVICE_UNAVAILABLE, ErrorCode.TIMEOUT,
                                              ErrorCode.EXECUTION_ERROR}


def test_a_member_that_spawns_listens_on_loopback_only(start_system, join):
    """``run.py join`` with start_method = "spawn": its admin, the join process and a
    service actor spawned there (a fresh interpreter, which applies the bind address
    itself) listen on 127.0.0.1 only, none on 0.0.0.0 or ::."""
    system = start_system({"services": {
        "gpu": {"kind": "echo", "eager": True, "requires": {"gpu": True}}}})
    spawner, = join(system, start_method="spawn", spawner=True)
    wait_until(lambda: where(system)["gpu"][:2] == ("online", "spawner"), timeout=30)
    assert system.get_service("gpu").execute_task(Task(id="s", type="echo", data=5)).unwrap() == 5
    service = psutil.Process(where(system)["gpu"][2])
    assert "spawn_main" in " ".join(service.cmdline())  # spawned, not forked from the admin
    processes = spawner.processes()
    assert service in processes
    sockets = {p.pid: listening(p) for p in processes}
    assert {port for _, port in sockets[spawner.admin.pid]} >= {spawner.port}, sockets
    assert sockets[service.pid], sockets  # the spawned actor's own socket
    assert {ip for socks in sockets.values() for ip, _ in socks} == {"127.0.0.1"}, sockets


@pytest.mark.slow
def test_a_cuda_service_is_placed_on_a_member_that_spawns(start_system, join, tmp_path):
    """The CUDA path on a CPU machine: a wav2vec2 service on device "cuda" goes to the
    member with a GPU that starts actors with spawn (not to the forking leader), and gets
    as far as torch's answer there (no GPU here), not the refusal a forked process gets."""
    from services.wav2vec2.checkpoint import make_checkpoint
    model = str(make_checkpoint(tmp_path / "tiny", "tiny"))
    system = start_system({"services": {"asr": {
        "kind": "wav2vec2", "model": model, "device": "cuda", "eager": True,
        "requires": {"gpu": True}, "max_restarts": 0}}})
    assert "gpu = true wanted, it has false" in where_error(system, "asr")  # the leader's
    forked, = join(system, forked=True)
    assert "forked: start_method = \"spawn\" wanted, it has \"fork\"" in where_error(system, "asr")
    join(system, start_method="spawn", spawner=True)
    wait_until(lambda: "torch sees no CUDA GPU" in (where_error(system, "asr") or ""),
               timeout=60)
    asr = next(s for s in system.services() if s.name == "asr")
    assert asr.status.value == "failed" and asr.member is None


def where_error(system, name: str) -> str | None:
    return next(s.last_error for s in system.services() if s.name == name)


@pytest.mark.slow
def test_members_rejoin_a_restarted_leader(start_system, join):
    """kill -9 of the supervisor: the launcher starts the runtime again (a new admin on the
    same port) and the member registers with it again (host.member.REREGISTRATION_S)."""
    system = start_system({"services": {
        "gpu": {"kind": "echo", "eager": True, "requires": {"gpu": True}}}})
    join(system, m1=True)
    wait_until(lambda: where(system)["gpu"][:2] == ("online", "m1"), timeout=15)
    os.kill(system.info.pid, signal.SIGKILL)
    killed = time.monotonic()

    def back() -> bool:
        try:
            return where(system)["gpu"][:2] == ("online", "m1")
        except GrymError:
            return False

    wait_until(back, timeout=30, interval=0.2)
    print(f"\nthe member's service online again {time.monotonic() - killed:.1f} s after the "
          "leader's supervisor was killed")
