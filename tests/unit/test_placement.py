"""More than one host, without actors: capabilities, requirements, member liveness and
placement (supervisor/placement.py), device selection (services/devices.py), the
config rules for ``requires`` and CUDA, and the supervisor's handling of members."""
from __future__ import annotations

import json
import subprocess
from types import SimpleNamespace

import pytest
from thespian.actors import ActorExitRequest, ActorSystemConventionUpdate
from thespian.system.messages.admin import QueryAck, QueryExists

import runtime.capabilities as caps
from actors.service_actor import ServiceActor
from messages.errors import ConfigError, InitError, ServiceUnavailable
from messages.service import ServiceStatus
from messages.system import GetService, GetSystemInfo, SystemInfo
from services.devices import device_requirements, select_device
from supervisor.config import SystemConfig
from supervisor.placement import DOWN_PING_EVERY, Convention
from tests.unit.test_supervisor_shell import echo, make, online  # noqa: F401 - the fixture

S = ServiceStatus
LEADER = {caps.MEMBER: "leader:1", caps.ADDRESS: "127.0.0.1:1", caps.GPU: False, caps.CORES: 2,
          caps.MEMORY: 8 << 30, caps.CUDA_DEVICES: 0, caps.START_METHOD: "fork"}


def member(name: str, **offered) -> dict:
    return {**LEADER, caps.MEMBER: name, caps.ADDRESS: f"10.0.0.{len(name)}:19500", **offered}


# -- capabilities and requirements --------------------------------------------------------
@pytest.mark.parametrize("requirements, reason", [
    ({}, None),
    ({"gpu": False}, None),
    ({"gpu": True}, "gpu = true wanted, it has false"),
    ({"cores": 2, "memory": 8 << 30}, None),
    ({"cores": 4}, "cores = 4 wanted, it has 2"),
    ({"cuda_devices": 1}, "cuda_devices = 1 wanted, it has 0"),
    ({"member": "leader:1"}, None),
    ({"member": "gpu-box"}, 'member = "gpu-box" wanted, it has "leader:1"'),
    ({"start_method": "spawn"}, 'start_method = "spawn" wanted, it has "fork"'),
    ({"colour": "red"}, "colour is not a requirement this runtime knows"),
])
def test_meets_says_why_not(requirements, reason):
    assert caps.meets(LEADER, requirements) == reason


def test_the_service_actor_asks_the_same_rule():
    # Thespian calls this on each actor system of the convention before it creates the actor.
    assert ServiceActor.actorSystemCapabilityCheck(member("m1", gpu=True), {"gpu": True})
    assert not ServiceActor.actorSystemCapabilityCheck(LEADER, {"gpu": True})
    assert not ServiceActor.actorSystemCapabilityCheck(member("m1", gpu=True), {"member": "m2"})


@pytest.fixture(autouse=True)
def fresh_probe():
    caps.cuda_devices.cache_clear()  # asked once per process: each test asks anew
    yield
    caps.cuda_devices.cache_clear()


def test_probe_without_a_gpu_driver_never_runs_torch(monkeypatch):
    monkeypatch.setattr(caps, "_GPU_DRIVER_PATHS", ("/nonexistent/driver",))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("torch was asked"))
    monkeypatch.delenv(caps.TEST_OVERRIDE_ENV, raising=False)
    found = caps.probe()
    assert found[caps.GPU] is False and found[caps.CUDA_DEVICES] == 0
    assert found[caps.CORES] >= 1 and found[caps.MEMORY] > 0


def test_probe_asks_torch_in_a_child_interpreter(monkeypatch, tmp_path):
    monkeypatch.setattr(caps, "_GPU_DRIVER_PATHS", (str(tmp_path),))
    asked = []

    def run(argv, **kw):
        asked.append(argv)
        return SimpleNamespace(stdout=json.dumps({"count": 2, "names": ["H100", "H100"]}) + "\n")

    monkeypatch.setattr(subprocess, "run", run)
    assert caps.cuda_devices() == {caps.GPU: True, caps.CUDA_DEVICES: 2,
                                   caps.CUDA_NAMES: ["H100", "H100"]}
    assert asked and asked[0][1] == "-c"  # a fresh interpreter: this process never inits CUDA


def test_the_test_only_override_is_laid_over_the_probe(monkeypatch):
    monkeypatch.setenv(caps.TEST_OVERRIDE_ENV, '{"gpu": true, "cuda_devices": 1}')
    assert caps.probe()[caps.GPU] is True
    monkeypatch.setenv(caps.TEST_OVERRIDE_ENV, "[1]")
    with pytest.raises(ValueError, match="JSON object"):
        caps.probe()


# -- device selection -------------------------------------------------------------------
def never() -> int:
    raise AssertionError("torch must not be asked")


@pytest.mark.parametrize("name, count, method, expected", [
    ("cpu", 0, "fork", "cpu"),
    ("auto", 1, "spawn", "cuda"),
    ("auto", 0, "spawn", "cpu"),
    ("auto", 1, None, "cuda"),        # not started by an actor system: in-process use
    ("cuda", 1, "spawn", "cuda"),
    ("cuda:1", 2, "spawn", "cuda:1"),
])
def test_device_selection(name, count, method, expected):
    assert select_device(name, lambda: count, method) == expected


def test_auto_in_a_forked_process_is_the_cpu_without_asking_torch():
    assert select_device("auto", never, "fork") == "cpu"
    assert select_device("cpu", never, "spawn") == "cpu"


@pytest.mark.parametrize("name, count, method, message", [
    ("cuda", 1, "fork", "cannot be used in a process started by fork"),
    ("cuda", 0, "spawn", "torch sees no CUDA GPU"),
    ("cuda:2", 2, "spawn", "sees 2 CUDA device(s): cuda:0 to cuda:1"),
    ("tpu", 1, "spawn", "is not one of"),
])
def test_device_refusals_are_init_errors(name, count, method, message):
    with pytest.raises(InitError, match=message.replace("(", r"\(").replace(")", r"\)")):
        select_device(name, (lambda: count) if method != "fork" else never, method)


def test_device_requirements():
    assert device_requirements("cpu") == device_requirements("auto") == {}
    assert device_requirements("cuda") == {"gpu": True, "cuda_devices": 1, "start_method": "spawn"}
    assert device_requirements("cuda:3")["cuda_devices"] == 4


# -- config ---------------------------------------------------------------------------------
def test_requires_is_a_checked_runtime_key():
    spec = SystemConfig.from_dict({"services": {"e": echo(requires={
        "gpu": True, "memory": "2GB", "member": "box"})}}).services["e"]
    assert spec.requires == {"gpu": True, "memory": 2_000_000_000, "member": "box"}
    assert spec.placement() == spec.requires


@pytest.mark.parametrize("requires, key", [
    ({"gpu": 1}, "services.e.requires.gpu"),
    ({"cores": 0}, "services.e.requires.cores"),
    ({"memory": "lots"}, "services.e.requires.memory"),
    ({"start_method": "forkserver"}, "services.e.requires.start_method"),
    ({"colour": "red"}, "services.e.requires.colour"),
    ("gpu", "services.e.requires"),
])
def test_bad_requires_name_the_key(requires, key):
    with pytest.raises(ConfigError) as caught:
        SystemConfig.from_dict({"services": {"e": echo(requires=requires)}})
    assert caught.value.details["key"] == key


def asr(**fields) -> dict:
    return {"kind": "wav2vec2", "model": "m", **fields}


def test_a_cuda_device_under_fork_is_refused_naming_the_key():
    with pytest.raises(ConfigError) as caught:
        SystemConfig.from_dict({"services": {"asr": asr(device="cuda")}})
    assert caught.value.details["key"] == "services.asr.device"
    assert 'system.start_method = "spawn"' in caught.value.message


def test_a_cuda_device_runs_under_spawn_or_on_a_member():
    spawn = SystemConfig.from_dict({"system": {"start_method": "spawn"},
                                    "services": {"asr": asr(device="cuda:1")}})
    assert spawn.services["asr"].placement() == {"gpu": True, "cuda_devices": 2,
                                                 "start_method": "spawn"}
    placed = SystemConfig.from_dict({"services": {"asr": asr(device="cuda",
                                                             requires={"gpu": True})}})
    assert placed.services["asr"].placement()["start_method"] == "spawn"
    assert SystemConfig.from_dict({"services": {"asr": asr(device="auto")}}) \
        .services["asr"].placement() == {}


# -- members and placement ----------------------------------------------------------------
def convention() -> Convention:
    return Convention.of(LEADER, missed_limit=4)


def test_placement_picks_a_member_that_meets_the_requirements():
    c = convention()
    c.joined("addr-1", member("m1", gpu=True, cuda_devices=1))
    c.joined("addr-2", member("m2"))
    assert c.place({"gpu": True}, {}).name == "m1"
    assert c.place({}, {}).name == "leader:1"
    # The least loaded among those that fit; the leader wins a tie.
    assert c.place({"cores": 1}, {"leader:1": 1}).name == "m1"
    assert c.place({"cores": 1}, {"leader:1": 1, "m1": 1}).name == "m2"


def test_no_member_meets_them_says_why_for_each():
    c = convention()
    c.joined("addr-1", member("m1"))
    with pytest.raises(ServiceUnavailable) as caught:
        c.place({"gpu": True}, {})
    assert caught.value.message == (
        "no member of the convention meets requires {gpu = true} (leader:1: gpu = true "
        "wanted, it has false; m1: gpu = true wanted, it has false)")


def test_a_member_that_stops_answering_is_lost_then_back():
    c = convention()
    m1 = c.joined("addr-1", member("m1", gpu=True))
    # One ping out at a time: an unanswered one is not followed by more.
    assert [c.tick() for _ in range(4)] == [([m1], [])] + [([], [])] * 3
    assert c.tick() == ([], [m1]) and not m1.up
    with pytest.raises(ServiceUnavailable, match="m1: not answering"):
        c.place({"gpu": True}, {})
    pings = [c.tick()[0] for _ in range(DOWN_PING_EVERY)]
    assert pings[-1] == [m1] and not any(pings[:-1])  # pinged, more slowly
    assert c.answered("addr-1") is m1 and m1.up  # back
    assert c.place({"gpu": True}, {}) is m1
    assert c.tick() == ([m1], [])
    assert c.answered("addr-1") is None  # an ordinary answer
    assert c.tick() == ([m1], [])  # answered: pinged again


def test_names_tell_members_apart():
    c = convention()
    c.joined("addr-1", member("m1"))
    with pytest.raises(ServiceUnavailable, match="already in the convention"):
        c.joined("addr-2", member("m1"))
    with pytest.raises(ServiceUnavailable, match="not started by run.py join"):
        c.joined("addr-3", {"Admin Port": 1})
    c.tick(), c.tick(), c.tick(), c.tick(), c.tick()  # m1 lost
    assert c.joined("addr-2", member("m1")).address == "addr-2"  # restarted elsewhere
    assert [m.address for m in c.remote] == ["addr-2"]
    assert c.left("addr-2").name == "m1" and c.remote == []


# -- the supervisor with members ----------------------------------------------------------
def started(make, **services):  # noqa: F811 - the fixture
    sup = make(services, routes={"echo": next(iter(services))})
    # Started without capabilities: the leader is "leader"; give it the usual ones.
    sup.actor.convention.local.capabilities.update({**LEADER, caps.MEMBER: "leader"})
    return sup


def test_a_service_needing_a_gpu_is_created_on_the_member_that_has_one(make):  # noqa: F811
    created = []
    sup = started(make, echo=echo(), gpu=echo(requires={"gpu": True}))
    assert sup.actor.services["gpu"].status is S.FAILED  # no member yet
    original = sup.actor.createActor

    def create(actor_class, *args, **kw):
        created.append(kw.get("targetActorRequirements"))
        return original(actor_class, *args, **kw)

    sup.actor.createActor = create
    sup.deliver(ActorSystemConventionUpdate("admin-m2", member("m2"), True), "thespian")
    assert sup.actor.services["gpu"].status is S.FAILED and created == []
    sup.deliver(ActorSystemConventionUpdate("admin-m1", member("m1", gpu=True), True), "thespian")
    assert created == [{"gpu": True, "member": "m1"}]
    child = sup.actor.services["gpu"]
    assert (child.member, child.local, child.status) == ("m1", False, S.OFFLINE)
    online(sup, "gpu")
    info = to_host(sup, GetSystemInfo())
    assert {s.name: s.member for s in info.services} == {"echo": "leader", "gpu": "m1"}
    assert {m.name: m.services for m in info.members} == {
        "leader": ("context", "router", "echo"), "m2": (), "m1": ("gpu",)}


def to_host(sup, msg):
    sup.actor.ready = True  # the router has said which services it knows
    (reply,) = [m for a, m in sup.deliver(msg, "host") if a == "host"]
    return reply


def test_a_lost_member_s_services_are_placed_again_and_never_killed_by_pid(make):  # noqa: F811
    sup = started(make, gpu=echo(requires={"gpu": True}))
    for name in ("m1", "m2"):
        sup.deliver(ActorSystemConventionUpdate(f"admin-{name}", member(name, gpu=True), True),
                    "thespian")
    child = sup.actor.services["gpu"]
    first, generation = child.member, child.generation
    online(sup, "gpu")
    old = child.address
    other = "admin-m2" if first == "m1" else "admin-m1"
    for _ in range(4):
        sent = sup.tick({})  # nobody answers but the other member's admin
        assert [a for a, m in sent if isinstance(m, QueryExists)] in (
            [other], [f"admin-{first}", other])  # one ping out at a time
        sup.deliver(QueryAck("multiprocTCPBase", 2, False), other)
    sent = sup.tick({})
    assert child.member != first and child.generation == generation + 1
    assert (old, ActorExitRequest()) in [(a, m) for a, m in sent if isinstance(m, ActorExitRequest)]
    assert sup.killed == []  # 4242 is a pid on another host
    events = [e for e in sup.events(sent)]
    assert any(f"its member {first} was lost: missed 4 pings" in e.reason for e in events)


def test_a_member_leaving_fails_what_only_it_could_run_with_the_reason(make):  # noqa: F811
    sup = started(make, gpu=echo(requires={"gpu": True}))
    sup.deliver(ActorSystemConventionUpdate("admin-m1", member("m1", gpu=True), True), "thespian")
    online(sup, "gpu")
    sup.deliver(ActorSystemConventionUpdate("admin-m1", member("m1", gpu=True), False), "thespian")
    child = sup.actor.services["gpu"]
    assert child.status is S.FAILED and "no member of the convention meets" in child.last_error
    (reply,) = [m for a, m in sup.deliver(GetService("gpu"), "host") if a == "host"]
    assert reply.error.code.value == "SERVICE_UNAVAILABLE" and "gpu = true" in reply.error.message
    assert isinstance(to_host(sup, GetSystemInfo()), SystemInfo)


def test_one_heartbeat_out_at_a_time(make):  # noqa: F811
    """A child that reads nothing for seconds (a spawned one importing torch) gets no
    more heartbeats until it answers: Thespian would keep each pending, and once 20 are,
    every other send of the supervisor waits (measured: 3.8 s of silence)."""
    sup = make({"echo": echo()})
    online(sup)
    address = sup.address("echo")
    beats = [sum(1 for a, m in sup.tick({}) if a == address and type(m).__name__ == "Heartbeat")
             for _ in range(3)]
    assert beats == [1, 0, 0]
    assert [a for a, m in sup.tick({"echo": {}}) if a == address
            and type(m).__name__ == "Heartbeat"] == [address]  # answered: the next one goes


# -- run.py join: what a member refuses before it starts anything ------------------------
def membership_in(tmp_path, leader: str, **system):
    from host.member import membership
    config = tmp_path / "member.toml"
    config.write_text("[system]\n" + "".join(f'{k} = "{v}"\n' for k, v in system.items()))
    from tests.conftest import free_port
    return membership(leader, str(config), free_port(), "m1")


def key_file(tmp_path):
    from runtime import frames
    return frames.write_secret_file(tmp_path / "keys" / "secret.key")


def test_a_member_needs_the_runtime_s_key(tmp_path):
    from host.member import check
    member = membership_in(tmp_path, "127.0.0.1:19500", secret_file=str(tmp_path / "none.key"))
    with pytest.raises(ConfigError) as caught:
        check(member)
    assert caught.value.details["key"] == "system.secret_file"
    assert "copy the leader's key file" in caught.value.message


def test_a_loopback_member_of_a_remote_leader_is_refused(tmp_path):
    from host.member import check
    member = membership_in(tmp_path, "10.1.2.3:19500", secret_file=str(key_file(tmp_path)))
    with pytest.raises(ConfigError) as caught:
        check(member)
    assert caught.value.details["key"] == "system.bind_address"


def test_a_leader_that_does_not_answer_is_refused(tmp_path):
    from host.member import check
    from tests.conftest import free_port
    member = membership_in(tmp_path, f"127.0.0.1:{free_port()}",
                           secret_file=str(key_file(tmp_path)))
    with pytest.raises(InitError, match="no runtime answers at 127.0.0.1"):
        check(member)


@pytest.mark.parametrize("leader", ["localhost", "10.0.0.1:", ":19500", "h:0", "h:99999"])
def test_the_leader_is_host_and_port(leader):
    from host.member import parse_leader
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        parse_leader(leader)


def test_a_member_uses_the_leader_s_key_by_default(tmp_path):
    from host.member import membership
    member = membership("127.0.0.1:23456", None, 23457, None)
    assert member.secret_file == SystemConfig.from_dict(
        {"system": {"admin_port": 23456}}).secret_file()
    assert member.config.system.admin_port == 23457 and member.name.endswith(":23457")
