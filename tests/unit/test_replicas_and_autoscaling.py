"""Replicas and autoscaling as plain code: the config's expansion into replicas, the
plan of a change of count, the route table's choice of replica, and the policy."""
from __future__ import annotations

from collections import Counter

import pytest

from messages.errors import ConfigError, Overloaded
from messages.service import ServiceStatus as S
from messages.system import ServiceDirectoryUpdate, replica_id, replica_service
from routing.table import RouteTable
from supervisor.autoscaling import Autoscaler, AutoscalingConfig
from supervisor.config import SystemConfig
from supervisor.plan import plan
from supervisor.scaling import _with_replicas


def config(**echo) -> SystemConfig:
    return SystemConfig.from_dict({"services": {"echo": {"kind": "echo", **echo}}})


# -- config ------------------------------------------------------------------------------
def test_replicas_expand_into_one_spec_each_and_routes_name_the_service():
    cfg = config(replicas=3)
    assert list(cfg.services) == ["echo", "echo#1", "echo#2"]
    assert [s.replica_of for s in cfg.services.values()] == [None, "echo", "echo"]
    assert cfg.routes == {"echo": "echo"}


def test_a_versioned_service_has_versioned_replicas():
    cfg = SystemConfig.from_dict({"services": {"asr@2": {"kind": "echo", "replicas": 2}}})
    assert list(cfg.services) == ["asr@2", "asr@2#1"]
    assert replica_service("asr@2#1") == "asr@2" and replica_id("asr@2", 0) == "asr@2"


def test_autoscaling_starts_at_min_replicas_unless_replicas_says():
    assert len(config(autoscaling={"min_replicas": 2, "max_replicas": 4}).services) == 2
    assert len(config(replicas=3, autoscaling={"min_replicas": 2, "max_replicas": 4})
               .services) == 3


@pytest.mark.parametrize("table, key", [
    ({"replicas": 0}, "services.echo.replicas"),
    ({"replicas": True}, "services.echo.replicas"),
    ({"replicas": 5, "autoscaling": {"max_replicas": 4}}, "services.echo.replicas"),
    ({"autoscaling": {"min_replicas": 3, "max_replicas": 2}},
     "services.echo.autoscaling.max_replicas"),
    ({"autoscaling": {"target_ongoing_requests": 0, "max_replicas": 2}},
     "services.echo.autoscaling.target_ongoing_requests"),
    ({"autoscaling": {"max_replica": 2}}, "services.echo.autoscaling.max_replica"),
    ({"autoscaling": 4}, "services.echo.autoscaling"),
    ({"replica_of": "x"}, None),   # the runtime's own field: a setting of the kind, refused
])
def test_bad_replica_keys_are_refused_with_the_key_named(table, key):
    with pytest.raises(ConfigError) as err:
        config(**table)
    if key is not None:
        assert err.value.details["key"] == key, err.value.message


def test_a_name_with_the_replica_separator_is_refused():
    with pytest.raises(ConfigError, match="must not contain '#'"):
        SystemConfig.from_dict({"services": {"echo#1": {"kind": "echo"}}})


# -- plan ----------------------------------------------------------------------------------
def test_more_replicas_start_next_to_the_running_one_which_is_not_replaced():
    old, new = config(replicas=1), config(replicas=3)
    p = plan(old, new)
    assert p.start == ("echo#1", "echo#2") and p.stop == () and p.replace == ()
    assert [(sid, [c.key for c in cs]) for sid, cs in p.update] == \
        [("echo", ["services.echo.replicas"])]
    back = plan(new, old)
    assert back.stop == ("echo#1", "echo#2") and back.start == () and back.replace == ()


def test_a_change_of_settings_replaces_every_replica():
    p = plan(config(replicas=2), config(replicas=2, delay_ms=5))
    assert [sid for sid, _ in p.replace] == ["echo", "echo#1"]


def test_the_autoscaler_changes_only_the_count_in_the_raw_config():
    raw = {"services": {"asr": {"kind": "echo", "version": "2", "autoscaling": {"max_replicas": 4}}}}
    changed = _with_replicas(raw, "asr@2", 3)
    assert changed["services"]["asr"]["replicas"] == 3
    assert "replicas" not in raw["services"]["asr"], "the running config is not touched"
    assert len(SystemConfig.from_dict(changed).services) == 3


# -- route table -------------------------------------------------------------------------
def table_with(n: int, max_queue: int = 100) -> RouteTable:
    table = RouteTable(routes={"echo": "echo"})
    for i in range(n):
        table.update(ServiceDirectoryUpdate(
            replica_id("echo", i), f"addr{i}", S.ONLINE, i + 1, max_queue=max_queue,
            replica_of="echo" if i else None))
    return table


def test_each_task_goes_to_the_replica_with_the_fewest_in_flight():
    table = table_with(3)
    picked = []
    for _ in range(9):
        entry = table.admit(table.service_for("echo"))
        entry.in_flight += 1
        picked.append(entry.name)
    assert Counter(picked) == {"echo": 3, "echo#1": 3, "echo#2": 3}
    table.services["echo#1"].in_flight = 0
    assert table.admit("echo").name == "echo#1"


def test_a_replica_that_cannot_take_work_is_passed_over():
    table = table_with(2, max_queue=1)
    table.update(ServiceDirectoryUpdate("echo", None, S.UNHEALTHY, 1, max_queue=1))
    assert table.admit("echo").name == "echo#1"
    table.services["echo#1"].in_flight = 1
    with pytest.raises(Exception):  # none can: the first replica's reason
        table.admit("echo")


def test_a_replica_named_directly_is_that_replica():
    table = table_with(3)
    assert table.admit("echo#2").name == "echo#2"
    table.services["echo#2"].in_flight = 100
    with pytest.raises(Overloaded):
        table.admit("echo#2")


def test_many_replicas_use_two_random_choices_and_stay_even(monkeypatch):
    import random

    from routing import table as table_module
    monkeypatch.setattr(table_module, "random", random.Random(7))  # the same picks each run
    table = table_with(16)
    for _ in range(16 * 20):
        table.admit("echo").in_flight += 1
    loads = [e.in_flight for e in table.services.values()]
    assert max(loads) - min(loads) <= 3, loads


# -- the policy -----------------------------------------------------------------------------
def scaler(**keys) -> Autoscaler:
    return Autoscaler("echo", AutoscalingConfig(**{
        "min_replicas": 1, "max_replicas": 4, "target_ongoing_requests": 2,
        "upscale_delay_s": 1.0, "downscale_delay_s": 5.0, "look_back_period_s": 1.0, **keys}))


def test_scales_up_to_the_target_once_the_wish_has_held_for_the_upscale_delay():
    a = scaler()
    for t in (0.0, 0.5):
        a.observe(t, 16)
        assert a.decide(t, 1) is None
    a.observe(1.0, 16)
    d = a.decide(1.0, 1)
    assert (d.current, d.desired, d.direction) == (1, 4, "up"), "clamped to max_replicas"
    assert "16.0 ongoing" in d.reason() and "1 -> 4" in d.reason()


def test_a_burst_shorter_than_the_delay_changes_nothing():
    a = scaler(look_back_period_s=0.4)
    a.observe(0.0, 16)
    assert a.decide(0.0, 1) is None
    for t in (0.5, 1.0, 1.5, 2.0, 2.5):
        a.observe(t, 0)
        assert a.decide(t, 1) is None


def test_scales_down_after_the_downscale_delay_to_min_replicas():
    a = scaler()
    decisions = []
    for step in range(0, 14):
        t = step * 0.5
        a.observe(t, 0)
        d = a.decide(t, 4)
        if d:
            decisions.append((t, d.desired))
            break
    assert decisions == [(5.0, 1)]


def test_a_wish_that_turns_round_starts_its_delay_again():
    a = scaler(look_back_period_s=0.0)
    a.observe(0.0, 16)
    a.decide(0.0, 2)            # wants more
    a.observe(0.8, 0)
    assert a.decide(0.8, 2) is None   # now wants fewer: a new wish, from 0.8
    a.observe(1.2, 0)
    assert a.decide(1.2, 2) is None, "the up wish's time does not count for the down one"


def test_an_apply_that_leaves_replicas_out_keeps_the_autoscalers_count():
    from types import SimpleNamespace

    from supervisor.scaling import Scaling
    table = {"kind": "echo", "autoscaling": {"min_replicas": 1, "max_replicas": 4}}
    running = SystemConfig.from_dict({"services": {"echo": {**table, "replicas": 3}}})
    shell = SimpleNamespace(config=running)
    keep = lambda raw: Scaling._keep_replicas(shell, raw)  # noqa: E731
    assert keep({"services": {"echo": table}})["services"]["echo"]["replicas"] == 3
    fewer = {**table, "autoscaling": {"min_replicas": 1, "max_replicas": 2}}
    assert keep({"services": {"echo": fewer}})["services"]["echo"]["replicas"] == 2
    said = {**table, "replicas": 1}
    assert keep({"services": {"echo": said}})["services"]["echo"]["replicas"] == 1
    junk = {**table, "autoscaling": {"max_replicas": "many"}}
    assert "replicas" not in keep({"services": {"echo": junk}})["services"]["echo"]


def test_after_a_failed_scaling_it_holds_off_longer_each_time():
    a = scaler(upscale_delay_s=0.0, look_back_period_s=0.0)
    a.observe(0.0, 16)
    assert a.decide(0.0, 1) is not None
    assert a.failed(0.0) == 2.0
    assert a.decide(1.0, 1) is None, "held"
    assert a.decide(2.0, 1) is not None
    assert a.failed(2.0) == 4.0 and a.decide(5.0, 1) is None and a.decide(6.0, 1) is not None
    a.succeeded()
    assert a.failed(6.0) == 2.0


def test_a_services_shutdown_budget_is_its_own_and_changes_in_place():
    assert config().services["echo"].shutdown_s == 5.0
    p = plan(config(), config(shutdown_s=30))
    assert p.replace == () and [sid for sid, _ in p.update] == ["echo"]
    with pytest.raises(ConfigError) as err:
        config(shutdown_s=0)
    assert err.value.details["key"] == "services.echo.shutdown_s"


def test_a_directory_update_names_its_service_as_text():
    from messages.errors import InvalidInput
    with pytest.raises(InvalidInput) as err:
        ServiceDirectoryUpdate("echo#1", "addr", S.ONLINE, 1, max_queue=1, replica_of=7)
    assert err.value.details["field"] == "replica_of"
