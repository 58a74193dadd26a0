"""Messages validate themselves; configuration errors name their key."""
from __future__ import annotations

import pickle

import pytest

from messages import ErrorCode, ErrorInfo, Task, TaskResult
from messages.errors import ConfigError, GrymError, InvalidInput, Overloaded, error_class
from messages.validation import parse_size
from supervisor.config import SystemConfig


@pytest.mark.parametrize("kwargs,field", [
    (dict(id="", type="echo"), "id"),
    (dict(id="x", type=""), "type"),
    (dict(id="x", type="echo", priority=11), "priority"),
    (dict(id="x", type="echo", priority=True), "priority"),
    (dict(id="x", type="echo", timeout_s=-1), "timeout_s"),
    (dict(id="x", type="echo", timeout_s=float("nan")), "timeout_s"),
    (dict(id="x", type="echo", metadata=[1]), "metadata"),
    (dict(id="x", type="echo", context="ctx"), "context"),
    (dict(id="x", type="echo", store_results="yes"), "store_results"),
])
def test_bad_tasks_name_the_field(kwargs, field):
    with pytest.raises(InvalidInput) as err:
        Task(**kwargs)
    assert err.value.details["field"] == field
    assert err.value.code is ErrorCode.INVALID_INPUT


def test_messages_pickle_and_revalidate():
    task = Task(id="t", type="echo", data=b"x", metadata={"a": 1})
    assert pickle.loads(pickle.dumps(task)) == task
    tampered = pickle.loads(pickle.dumps(task))
    object.__setattr__(tampered, "priority", 99)  # what a hostile pickle can do
    with pytest.raises(InvalidInput):
        tampered.validate()


def test_every_error_code_has_an_exception_and_round_trips():
    for code in ErrorCode:
        exc = error_class(code)("boom", {"k": 1})
        assert isinstance(exc, GrymError) and exc.code is code
        again = pickle.loads(pickle.dumps(exc))
        assert again.info() == ErrorInfo(code, "boom", {"k": 1})


def test_result_unwrap():
    assert TaskResult.success("t", 5).unwrap() == 5
    with pytest.raises(Overloaded):
        TaskResult.failure("t", Overloaded("busy").info()).unwrap()
    with pytest.raises(InvalidInput):
        TaskResult("t", "completed")  # a status must be a TaskStatus


@pytest.mark.parametrize("text,expected", [
    ("1.5GB", 1_500_000_000), ("512MiB", 512 << 20), ("2gb", 2_000_000_000), (2048, 2048),
])
def test_sizes(text, expected):
    assert parse_size(text, "max_memory") == expected


@pytest.mark.parametrize("value", ["-1GB", "0GB", "lots", True, "1.5XB"])
def test_bad_sizes(value):
    with pytest.raises(ConfigError) as err:
        parse_size(value, "services.x.max_memory")
    assert "services.x.max_memory" in str(err.value)


@pytest.mark.parametrize("config,key", [
    ({"services": {"e": {"kind": "echo", "max_memory": "-1GB"}}}, "services.e.max_memory"),
    ({"services": {"e": {"kind": "echo", "dely_ms": 1}}}, "services.e.dely_ms"),
    ({"services": {"e": {"kind": "nope"}}}, "services.e.kind"),
    ({"services": {"e": {}}}, "services.e.kind"),
    ({"services": {"e": {"kind": "echo", "max_queue": 0}}}, "services.e.max_queue"),
    ({"services": {"e": {"kind": "echo", "restart": "sometimes"}}}, "services.e.restart"),
    ({"services": {"e": {"kind": "echo", "inject": "boom"}}}, "services.e.inject"),
    ({"system": {"admin_port": 80}}, "system.admin_port"),
    ({"system": {"bind_address": "everywhere"}}, "system.bind_address"),
    ({"health": {"missed_heartbeats": 0}}, "health.missed_heartbeats"),
    ({"restart": {"max_restarts": -1}}, "restart.max_restarts"),
    ({"routes": {"x": "ghost"}}, "routes.x"),
    ({"servces": {}}, "servces"),
])
def test_config_errors_name_the_key(config, key):
    with pytest.raises(ConfigError) as err:
        SystemConfig.from_dict(config)
    assert str(err.value).startswith(key), str(err.value)


def test_valid_config_with_defaults():
    cfg = SystemConfig.from_dict({"services": {"e": {"kind": "echo", "max_memory": "1.5GB",
                                                     "max_restarts": 3}}})
    spec = cfg.services["e"]
    assert spec.max_memory == 1_500_000_000 and spec.restart.max_restarts == 3
    assert cfg.system.bind_address == "127.0.0.1"
    assert cfg.routes == {"echo": "e"}  # the echo kind's type, to the one echo service


def test_forkserver_is_refused_with_the_reason_in_the_key():
    # Thespian's multiprocTCPBase cannot start children under forkserver: refuse it at
    # validation, not with a runtime that never comes up.
    with pytest.raises(ConfigError) as caught:
        SystemConfig.from_dict({"system": {"start_method": "forkserver"}})
    assert caught.value.details["key"] == "system.start_method"
    assert "fork, spawn" in caught.value.message
