"""Applying a config, as pure functions: versions and weighted routes in the config,
the plan (diff) between the running config and a new one, and the route table's picks."""
from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from routing.table import RouteTable, WeightedPicker, pinned_version
from messages.errors import ConfigError, ErrorCode, GrymError, InvalidInput, ServiceNotFound
from messages.service import ServiceStatus
from messages.system import ApplyRoutes, ServiceDirectoryUpdate, SystemInfo, ServiceInfo
from messages.task import Task
from supervisor.config import SystemConfig
from supervisor.plan import plan


def cfg(services: dict[str, Any], **sections: Any) -> SystemConfig:
    return SystemConfig.from_dict({"services": services, **sections})


def echo(**fields: Any) -> dict[str, Any]:
    return {"kind": "echo", **fields}


def refused_key(old: SystemConfig, new: SystemConfig) -> str:
    with pytest.raises(ConfigError) as err:
        plan(old, new)
    return err.value.details["key"]


# -- versions and routes in the config ----------------------------------------------------
def test_a_version_makes_the_service_id_name_at_version():
    c = cfg({"asr": echo(version="1"), "asr@2": echo()},
            routes={"echo": {"asr@1": 90, "asr@2": 10}})
    assert list(c.services) == ["asr@1", "asr@2"]
    assert [c.services[s].version for s in c.services] == ["1", "2"]
    assert c.routes == {"echo": {"asr@1": 90, "asr@2": 10}}


@pytest.mark.parametrize("services, routes, key", [
    ({"asr@2": echo(version="3")}, {}, "services.asr@2.version"),          # key and table disagree
    ({"asr": echo(version=2)}, {}, "services.asr.version"),                # a string, not a number
    ({"asr": echo(version="1"), "asr@1": echo()}, {"echo": "asr@1"}, "services.asr@1"),  # twice
    ({"router@2": echo()}, {}, "services.router@2"),                       # reserved name
    ({"a": echo(), "b": echo()}, {"echo": {"a": 0, "b": 0}}, "routes.echo"),   # all weights 0
    ({"a": echo(), "b": echo()}, {"echo": {"a": -1, "b": 2}}, "routes.echo"),  # negative
    ({"a": echo(), "b": echo()}, {"echo": {"a": 1.5, "b": 2}}, "routes.echo"),  # not whole
    ({"a": echo()}, {"echo": {"a": 1, "c": 1}}, "routes.echo"),            # unknown target
    ({"asr@1": echo()}, {"echo": "asr"}, "routes.echo"),                   # the bare name
])
def test_bad_versions_and_routes_name_their_key(services, routes, key):
    with pytest.raises(ConfigError) as err:
        cfg(services, routes=routes)
    assert err.value.details["key"] == key


def test_two_versions_serving_one_type_must_be_split_or_chosen():
    with pytest.raises(ConfigError) as err:
        cfg({"asr@1": echo(), "asr@2": echo()})
    assert err.value.details["key"] == "routes.echo"


def test_a_split_route_waits_as_long_as_its_slowest_service():
    info = SystemInfo(supervisor=None, router=None, context=None, default_task_timeout_s=30,
                      routes={"echo": {"a": 1, "b": 1}}, services=(
                          ServiceInfo("a", "echo", ServiceStatus.ONLINE, task_timeout_s=2),
                          ServiceInfo("b", "echo", ServiceStatus.ONLINE, task_timeout_s=5)))
    assert info.timeout_for(Task(id="t", type="echo")) == 5
    assert info.timeout_for(Task(id="t", type="echo"), "a") == 2


# -- the plan ---------------------------------------------------------------------------------
def steps(p) -> list[tuple[str, str]]:
    return [(s.action, s.target) for s in p.steps]


def test_the_same_config_plans_nothing():
    c = cfg({"e": echo(delay_ms=1)}, health={"missed_heartbeats": 6})
    assert plan(c, cfg({"e": echo(delay_ms=1)}, health={"missed_heartbeats": 6})).empty


def test_new_removed_and_changed_services():
    old = cfg({"a": echo(), "b": echo(), "c": echo(max_restarts=2)}, routes={"echo": "a"})
    new = cfg({"a": echo(delay_ms=5), "c": echo(max_restarts=3, eager=True), "d": echo()},
              routes={"echo": "d"})
    p = plan(old, new)
    assert p.start == ("d",) and p.stop == ("b",)
    assert [(sid, [c.key for c in ch]) for sid, ch in p.replace] == [("a", ["services.a.delay_ms"])]
    assert [(sid, sorted(c.key for c in ch)) for sid, ch in p.update] == [
        ("c", ["services.c.eager", "services.c.restart.max_restarts"])]
    assert p.staged == ("d", "a")  # online before traffic moves
    assert steps(p) == [("start", "d"), ("replace", "a"), ("update", "c"), ("route", "echo"),
                        ("stop", "b")]
    assert "a -> d" in p.steps[3].line()


@pytest.mark.parametrize("change", [{"max_queue": 8}, {"max_batch_size": 4}, {"warmup": False},
                                    {"task_timeout_s": 3}, {"max_memory": "1GB"},
                                    {"inject": "fail"}])
def test_any_change_but_the_in_place_keys_replaces_the_service(change):
    p = plan(cfg({"e": echo()}), cfg({"e": echo(**change)}))
    assert [sid for sid, _ in p.replace] == ["e"] and not p.update


def test_a_new_version_is_a_new_service_and_its_routes_move():
    p = plan(cfg({"asr": echo(version="1")}), cfg({"asr": echo(version="2")}))
    assert steps(p) == [("start", "asr@2"), ("route", "echo"), ("stop", "asr@1")]


def test_weights_change_is_a_route_change_only():
    services = {"a@1": echo(), "a@2": echo()}
    p = plan(cfg(services, routes={"echo": {"a@1": 90, "a@2": 10}}),
             cfg(services, routes={"echo": {"a@1": 50, "a@2": 50}}))
    assert steps(p) == [("route", "echo")]
    assert p.steps[0].detail == "a@1 90, a@2 10 -> a@1 50, a@2 50"


def test_health_and_some_system_keys_apply_in_place():
    p = plan(cfg({}), cfg({}, health={"missed_heartbeats": 8},
                          system={"default_task_timeout_s": 5}))
    assert steps(p) == [("set", "system.default_task_timeout_s"), ("set", "health.missed_heartbeats")]
    assert p.changed("health") and p.changed("system")


@pytest.mark.parametrize("section, table, key", [
    ("system", {"start_method": "spawn"}, "system.start_method"),
    ("system", {"max_message_bytes": "128MB"}, "system.max_message_bytes"),
    ("metrics", {"enabled": True}, "metrics.enabled"),
    ("http", {"port": 20000}, "http.port"),
    ("logging", {"level": "debug"}, "logging.level"),
    ("context", {"max_items": 5}, "context.max_items"),   # in memory: a restart loses it
])
def test_changes_the_running_system_cannot_take_are_refused_with_the_key(section, table, key):
    assert refused_key(cfg({}), cfg({}, **{section: table})) == key


def test_context_on_sqlite_restarts_the_context_actor_on_its_store(tmp_path):
    store = {"persistence": "sqlite", "path": str(tmp_path / "c.db")}
    p = plan(cfg({}, context=store), cfg({}, context={**store, "max_items": 5}))
    assert steps(p) == [("restart", "context")] and "max_items" in p.steps[0].detail
    assert refused_key(cfg({}, context=store),
                       cfg({}, context={**store, "path": str(tmp_path / "d.db")})) == "context.path"


def test_the_first_refused_key_refuses_everything_else_too():
    with pytest.raises(ConfigError):
        plan(cfg({"a": echo()}), cfg({"a": echo(delay_ms=1), "b": echo()},
                                     system={"bind_address": "127.0.0.2"}))


# -- the route table: weights and pins ------------------------------------------------------------
def entry(name: str, generation: int = 1, status=ServiceStatus.ONLINE, address: Any = "addr",
          retiring: bool = False) -> ServiceDirectoryUpdate:
    return ServiceDirectoryUpdate(name=name, address=address, status=status,
                                  generation=generation, max_queue=8, kind="echo",
                                  retiring=retiring)


def table(routes: dict[str, Any], *names: str) -> RouteTable:
    t = RouteTable(routes={})
    t.set_routes(routes)
    for name in names:
        t.update(entry(name))
    return t


def test_weights_give_exact_shares_spread_evenly():
    t = table({"stt": {"asr@1": 90, "asr@2": 10}}, "asr@1", "asr@2")
    picks = [t.service_for("stt") for _ in range(100)]
    assert Counter(picks) == {"asr@1": 90, "asr@2": 10}
    # Spread, not in a run: the 10 % service gets one task in each ten.
    assert all(picks[i:i + 10].count("asr@2") == 1 for i in range(0, 100, 10))


def test_a_service_that_cannot_take_work_gives_its_share_to_the_others():
    t = table({"stt": {"a": 1, "b": 1}}, "a", "b")
    t.update(entry("b", status=ServiceStatus.UNHEALTHY, address=None))
    assert {t.service_for("stt") for _ in range(10)} == {"a"}


def test_a_zero_weight_takes_nothing_until_it_is_the_only_one():
    picker = WeightedPicker({"a": 3, "b": 0})
    assert {picker.pick() for _ in range(9)} == {"a"}


def test_a_pinned_version_wins_over_the_weights():
    t = table({"stt": {"asr@1": 99, "asr@2": 1}}, "asr@1", "asr@2", "asr@3")
    assert {t.service_for("stt", "2") for _ in range(5)} == {"asr@2"}
    assert t.service_for("stt", "3") == "asr@3"  # running, though not in the route
    with pytest.raises(ServiceNotFound) as err:
        t.service_for("stt", "9")
    assert "asr@1, asr@2, asr@3" in err.value.message


@pytest.mark.parametrize("metadata, expected", [({}, None), ({"version": "2"}, "2"),
                                                ({"version": 2}, "2")])
def test_the_pinned_version_comes_from_task_metadata(metadata, expected):
    assert pinned_version(Task(id="t", type="stt", metadata=metadata)) == expected


@pytest.mark.parametrize("bad", ["", True, 1.5, ["2"]])
def test_a_malformed_pinned_version_is_invalid_input(bad):
    with pytest.raises(InvalidInput):
        pinned_version(Task(id="t", type="stt", metadata={"version": bad}))


def test_an_apply_swaps_the_table_at_once_and_names_what_it_replaced():
    t = table({"echo": "a"}, "a", "b")
    t.update(entry("a", generation=1))
    old = t.apply(ApplyRoutes(routes={"echo": "c"}, fetch_context=frozenset(),
                              default_timeout_s=5.0, directory=(entry("a", 3), entry("c")),
                              removed=("b",)))
    assert old == {("a", 1), ("b", 1)}
    assert (t.services["a"].generation, "b" in t.services, t.service_for("echo")) == (3, False, "c")
    # What the retiring generation says later does not touch the table.
    t.update(entry("a", 1, status=ServiceStatus.STOPPED, address=None, retiring=True))
    assert t.services["a"].generation == 3 and t.services["a"].address == "addr"


def test_an_unrouted_type_is_still_invalid_task_type():
    with pytest.raises(GrymError) as err:
        table({"echo": {"a": 1}}, "a").service_for("other")
    assert err.value.code is ErrorCode.INVALID_TASK_TYPE
