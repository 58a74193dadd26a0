"""A service's runtime keys belong to its spec, a kind's Settings hold model knobs only;
default routes follow the configured services; one rule gives every task its deadline."""
from __future__ import annotations

import dataclasses

import pytest

import supervisor.config as config_module
from messages import Task
from messages.errors import ConfigError
from messages.service import ServiceStatus
from messages.system import ServiceInfo, SystemInfo
from messages.task import effective_timeout_s
from services.echo import EchoService
from services.model_service import ModelService
from services.registry import BUILTIN, load_kind
from services.wav2vec2.service import Wav2Vec2Service
from supervisor.config import RESERVED_NAMES, RUNTIME_KEYS, SystemConfig

W2V_TYPES = {"speech-to-text", "audio-feature-extraction", "audio_process", "audio_analyze"}


def w2v(**keys):
    return {"kind": "wav2vec2", "model": "some/model", **keys}


# -- one owner for each key -------------------------------------------------------------
@pytest.mark.parametrize("kind", sorted(BUILTIN))
def test_no_kind_settings_declare_a_runtime_key(kind):
    fields = {f.name for f in dataclasses.fields(load_kind(kind).Settings)}
    assert not fields & RUNTIME_KEYS


def test_a_wav2vec2_service_without_batching_keys_gets_its_kinds_batching():
    spec = SystemConfig.from_dict({"services": {"asr": w2v()}}).services["asr"]
    assert (spec.max_batch_size, spec.max_batch_delay_ms) == (8, 5.0)  # the kind's defaults
    assert spec.max_queue == 64                                         # the spec's default
    echo = SystemConfig.from_dict({"services": {"e": {"kind": "echo"}}}).services["e"]
    assert (echo.max_batch_size, echo.max_batch_delay_ms) == (1, 0.0)


def test_the_services_own_key_wins_over_the_kinds_default():
    spec = SystemConfig.from_dict({"services": {"asr": w2v(max_batch_size=2, max_queue=5,
                                                           max_memory="2GB")}}).services["asr"]
    assert (spec.max_batch_size, spec.max_batch_delay_ms, spec.max_queue) == (2, 5.0, 5)
    assert spec.max_memory == 2_000_000_000
    assert not hasattr(spec.settings, "max_memory")  # the model knobs only
    assert spec.settings.model == "some/model"


@pytest.mark.parametrize("keys,key", [
    ({"max_batch_size": 0}, "max_batch_size"),
    ({"max_batch_delay_ms": -5}, "max_batch_delay_ms"),
    ({"max_queue": 2.5}, "max_queue"),
    ({"max_memory": "lots"}, "max_memory"),
    ({"task_timeout_s": 0}, "task_timeout_s"),
    ({"eager": "yes"}, "eager"),
    ({"max_restarts": -1}, "max_restarts"),
])
def test_bad_runtime_keys_of_a_kind_are_refused_naming_the_key(keys, key):
    with pytest.raises(ConfigError) as err:
        SystemConfig.from_dict({"services": {"asr": w2v(**keys)}})
    assert err.value.details["key"] == f"services.asr.{key}"
    assert str(err.value).startswith(f"services.asr.{key}:")


@dataclasses.dataclass(frozen=True)
class _Knobs:
    size: int = 1


@dataclasses.dataclass(frozen=True)
class _Doubled:
    max_queue: int = 4  # a runtime key, declared by a kind: two owners


def _with_kind(monkeypatch, cls):
    real = config_module.load_kind
    monkeypatch.setattr(config_module, "load_kind",
                        lambda kind: cls if kind == "custom" else real(kind))


def test_restart_keys_take_the_restart_table_over_the_kinds_default(monkeypatch):
    class Custom(ModelService):
        kind, Settings = "custom", _Knobs
        runtime_defaults = {"max_queue": 3, "max_restarts": 1, "restart_period_s": 7.0}

    _with_kind(monkeypatch, Custom)
    cfg = SystemConfig.from_dict({"restart": {"max_restarts": 2}, "services": {
        "a": {"kind": "custom"}, "b": {"kind": "custom", "max_restarts": 9, "size": 5}}})
    a, b = cfg.services["a"], cfg.services["b"]
    assert (a.max_queue, a.restart.max_restarts, a.restart.restart_period_s) == (3, 2, 7.0)
    assert (b.restart.max_restarts, b.settings) == (9, _Knobs(size=5))


@pytest.mark.parametrize("attrs,problem", [
    ({"Settings": _Doubled}, r"declares the runtime's key\(s\) max_queue"),
    ({"Settings": _Knobs, "runtime_defaults": {"max_qeue": 3}},
     r"runtime_defaults for unknown key\(s\) max_qeue"),
])
def test_a_kind_that_would_give_a_key_two_owners_is_refused(monkeypatch, attrs, problem):
    _with_kind(monkeypatch, type("Custom", (ModelService,), {"kind": "custom", **attrs}))
    with pytest.raises(ConfigError, match=problem) as err:
        SystemConfig.from_dict({"services": {"c": {"kind": "custom"}}})
    assert err.value.details["key"] == "services.c.kind"


# -- reserved names ---------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RESERVED_NAMES))
def test_internal_names_are_refused_as_service_names(name):
    with pytest.raises(ConfigError) as err:
        SystemConfig.from_dict({"services": {name: {"kind": "echo"}}})
    assert err.value.details["key"] == f"services.{name}"
    assert str(err.value).startswith(f"services.{name}: the name {name!r} is the runtime's own")


def test_router_and_context_are_reserved():
    assert {"router", "context"} <= RESERVED_NAMES


# -- routes ------------------------------------------------------------------------------
def test_default_routes_follow_the_configured_services():
    cfg = SystemConfig.from_dict({"services": {"asr": w2v(), "ping": {"kind": "echo"}}})
    assert cfg.routes == {**{t: "asr" for t in W2V_TYPES}, "echo": "ping"}
    assert SystemConfig.from_dict({"services": {"e": {"kind": "echo"}}}).routes == {"echo": "e"}
    assert SystemConfig.from_dict({}).routes == {}
    assert Wav2Vec2Service.task_types == W2V_TYPES and EchoService.task_types == {"echo"}


def test_two_services_claiming_a_task_type_is_an_error_naming_both():
    with pytest.raises(ConfigError) as err:
        SystemConfig.from_dict({"services": {"asr_a": w2v(), "asr_b": w2v()},
                                "routes": {"speech-to-text": "asr_b"}})
    message = str(err.value)
    assert "'asr_a' and 'asr_b' both serve task type" in message
    assert err.value.details["key"] in {f"routes.{t}" for t in W2V_TYPES - {"speech-to-text"}}


def test_an_explicit_route_chooses_between_claimants():
    cfg = SystemConfig.from_dict({"services": {"a": {"kind": "echo"}, "b": {"kind": "echo"}},
                                  "routes": {"echo": "b", "other": "a"}})
    assert cfg.routes == {"echo": "b", "other": "a"}


def test_three_claimants_are_all_named():
    with pytest.raises(ConfigError, match="services 'a', 'b' and 'c' all serve task type 'echo'"):
        SystemConfig.from_dict({"services": {n: {"kind": "echo"} for n in "abc"}})


# -- the deadline rule --------------------------------------------------------------------
@pytest.mark.parametrize("task_s,service_s,expected", [
    (2.0, 9.0, 2.0),     # the task's own timeout first
    (None, 9.0, 9.0),    # then its service's task_timeout_s
    (None, None, 30.0),  # then the system's default
    (0.5, None, 0.5),
])
def test_effective_timeout(task_s, service_s, expected):
    task = Task(id="t", type="echo", timeout_s=task_s)
    assert effective_timeout_s(task, service_s, 30.0) == expected


def test_system_info_gives_a_caller_the_routers_deadline():
    info = SystemInfo(supervisor=None, router=None, context=None, default_task_timeout_s=1.0,
                      routes={"echo": "slow", "ping": "fast"}, services=(
                          ServiceInfo("slow", "echo", ServiceStatus.ONLINE, task_timeout_s=4.0),
                          ServiceInfo("fast", "echo", ServiceStatus.ONLINE)))
    assert info.timeout_for(Task(id="t", type="echo")) == 4.0             # routed by type
    assert info.timeout_for(Task(id="t", type="ping")) == 1.0
    assert info.timeout_for(Task(id="t", type="ping"), service="slow") == 4.0  # direct
    assert info.timeout_for(Task(id="t", type="echo", timeout_s=0.2)) == 0.2
    assert info.timeout_for(Task(id="t", type="unrouted")) == 1.0
