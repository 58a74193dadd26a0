"""The host's replica of the router's table (host/direct.py), without actors: it
routes a task where the router would, and leaves to the router what it cannot."""
from __future__ import annotations

from messages.errors import ErrorCode
from messages.service import ServiceStatus
from messages.system import (
    ApplyRoutes, ContextMoved, Drain, RouterSetup, ServiceDirectoryUpdate,
)
from messages.task import Task
from host.direct import RouteReplica

S = ServiceStatus


def entry(name: str = "echo", **changes) -> ServiceDirectoryUpdate:
    fields = dict(name=name, address=f"{name}-addr", status=S.ONLINE, generation=1, max_queue=8,
                  kind="echo", task_timeout_s=None)
    return ServiceDirectoryUpdate(**{**fields, **changes})


def setup(**changes) -> RouterSetup:
    fields = dict(routes={"echo": "echo", "talk": "llm"}, context="ctx-addr",
                  fetch_context=frozenset({"llm"}), default_timeout_s=30.0,
                  directory=(entry(), entry("llm", kind="llm", task_timeout_s=5.0)))
    return RouterSetup(**{**fields, **changes})


def replica(**changes) -> RouteReplica:
    r = RouteReplica()
    assert r.apply(setup(**changes))
    return r


def test_nothing_is_routed_before_the_set_up_or_after_a_reset():
    r = RouteReplica()
    assert r.target(Task(id="t", type="echo")) is None
    r.apply(setup())
    assert r.target(Task(id="t", type="echo")) is not None
    r.reset()
    assert r.target(Task(id="t", type="echo")) is None


def test_a_task_goes_where_the_router_sends_it_with_the_deadline_rule():
    r = replica()
    t = r.target(Task(id="t", type="echo"))
    assert (t.service, t.address, t.generation, t.kind) == ("echo", "echo-addr", 1, "echo")
    assert t.timeout_s == 30.0 and not t.wants_context
    own = r.target(Task(id="t", type="talk"))
    assert own.timeout_s == 5.0 and own.wants_context  # the service's timeout; context wanted
    assert r.target(Task(id="t", type="talk", timeout_s=0.5)).timeout_s == 0.5
    assert not r.target(Task(id="t", type="talk", context={"x": 1})).wants_context
    # ExecuteTask names its service: no route needed, no context fetched (as the router)
    named = r.target(Task(id="t", type="anything"), service="llm")
    assert named.service == "llm" and not named.wants_context


def test_what_the_router_would_refuse_is_left_to_the_router():
    r = replica()
    assert r.target(Task(id="t", type="no-such-type")) is None
    assert r.target(Task(id="t", type="echo"), service="nope") is None
    assert r.target(Task(id="t", type="echo", metadata={"version": ""})) is None
    r.apply(entry(status=S.UNHEALTHY, address=None, generation=1))
    assert r.target(Task(id="t", type="echo")) is None
    r.apply(entry(status=S.ONLINE, address="new-addr", generation=2))
    assert r.target(Task(id="t", type="echo")).address == "new-addr"
    r.apply(Drain(drain_s=1.0))
    assert r.target(Task(id="t", type="echo")) is None


def test_a_lost_generation_is_remembered_with_the_routers_error_code():
    r = replica()
    assert r.lost("echo", 1) is None
    r.apply(entry(status=S.UNHEALTHY, address=None, lost_reason="process exited",
                  lost_code=ErrorCode.EXECUTION_ERROR.value))
    assert r.lost("echo", 1) == ("process exited", ErrorCode.EXECUTION_ERROR)
    assert r.lost("echo", 2) is None


def test_a_config_apply_moves_routes_and_services_at_once():
    r = replica()
    r.apply(ApplyRoutes(routes={"echo": {"echo@2": 1}}, fetch_context=frozenset(),
                        default_timeout_s=10.0,
                        directory=(entry("echo@2", address="v2-addr", generation=1),),
                        removed=("echo",)))
    t = r.target(Task(id="t", type="echo"))
    assert (t.service, t.address, t.timeout_s) == ("echo@2", "v2-addr", 10.0)
    assert r.target(Task(id="t", type="x"), service="echo") is None  # removed
    # a retiring generation's update settles its tasks, but does not bring it back
    r.apply(entry(status=S.ONLINE, retiring=True))
    assert r.target(Task(id="t", type="x"), service="echo") is None


def test_context_moves_and_labels_stay_bounded():
    r = replica()
    assert r.context == "ctx-addr"
    r.apply(ContextMoved(address=None, generation=2))
    assert r.context is None
    assert r.type_label("echo") == "echo" and r.type_label("whatever-a-caller-sends") == "direct"
    assert r.apply("not a control message") is False
