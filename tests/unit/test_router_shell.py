"""The TaskRouter's handling of messages, in one process: each routing rule in milliseconds.

Every accepted task is answered exactly once (by its service, its deadline, a
lost service or the drain); refusals are answered at once.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

import actors.router as router_module
from actors.router import TaskRouter
from messages.errors import ErrorCode
from messages.service import ServiceStatus, ServiceTask, ServiceTaskDone
from messages.system import (
    Drain, DrainDone, ErrorReply, ExecuteTask, GetRouterMetrics, RouterMetricsReport, RouterSetup,
    ServiceDirectoryUpdate,
)
from messages.task import Task, TaskResult
from tests.junk import every_message_forged, forged
from tests.unit.actor_harness import Clock, deliver, errors, fire_timers, harness, to

TOKEN = "supervisor-token"
SUPERVISOR, CALLER, SERVICE = "supervisor", "caller", "echo-actor"


def directory(**changes) -> ServiceDirectoryUpdate:
    fields = dict(name="echo", address=SERVICE, status=ServiceStatus.ONLINE, generation=1,
                  max_queue=8, kind="echo", token=TOKEN)
    return ServiceDirectoryUpdate(**{**fields, **changes})


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(router_module, "time", clock)
    return clock


@pytest.fixture
def router(clock) -> TaskRouter:
    router = harness(TaskRouter)
    deliver(router, RouterSetup(routes={"echo": "echo"}, context=None, fetch_context=frozenset(),
                                default_timeout_s=30.0, token=TOKEN), SUPERVISOR)
    deliver(router, directory(), SUPERVISOR)
    assert router.sent == []
    return router


def routed(router: TaskRouter, task: Task) -> ServiceTask:
    """Send ``task`` to the router; the one ServiceTask it hands the service."""
    sent = deliver(router, task, CALLER)
    assert [type(m) for _, m in sent] == [ServiceTask] and sent[0][0] == SERVICE, sent
    return sent[0][1]


def only_result(sent: list, who: str = CALLER) -> TaskResult:
    results = to(sent, who)
    assert len(results) == 1 and isinstance(results[0], TaskResult), sent
    return results[0]


def late_results(router: TaskRouter) -> int:
    [report] = to(deliver(router, GetRouterMetrics(), CALLER), CALLER)
    assert isinstance(report, RouterMetricsReport)
    return report.late_results


def test_a_task_goes_to_the_service_for_its_type_and_its_result_to_the_caller(router, clock):
    task = Task(id="t1", type="echo", data={"x": 1})
    sent_task = routed(router, task)
    assert sent_task.task == task
    assert sent_task.budget_s == pytest.approx(30.0)  # the system default: no other timeout set

    clock.advance(0.004)
    sent = deliver(router, ServiceTaskDone(sent_task.request_id, TaskResult.success("t1", {"x": 1})),
                   SERVICE)
    result = only_result(sent)
    assert result.ok and result.data == {"x": 1}
    assert result.metrics.total_ms == pytest.approx(4.0)
    assert late_results(router) == 0


def test_execute_task_names_the_service_and_skips_the_route_table(router):
    task = Task(id="t1", type="not-routed")
    sent = deliver(router, ExecuteTask(task, "echo"), CALLER)
    assert [(addr, type(m)) for addr, m in sent] == [(SERVICE, ServiceTask)]


def test_an_unknown_type_is_answered_with_invalid_task_type_and_reaches_no_service(router):
    sent = deliver(router, Task(id="t1", type="no-such-type"), CALLER)
    result = only_result(sent)
    assert result.task_id == "t1" and not result.ok
    assert result.error.code is ErrorCode.INVALID_TASK_TYPE
    assert "no-such-type" in result.error.message
    assert to(sent, SERVICE) == []


def test_a_service_that_is_down_refuses_at_once(router):
    deliver(router, directory(address=None, status=ServiceStatus.UNHEALTHY), SUPERVISOR)
    result = only_result(deliver(router, Task(id="t1", type="echo"), CALLER))
    assert result.error.code is ErrorCode.SERVICE_UNAVAILABLE


def test_past_max_queue_in_flight_the_router_refuses_with_overloaded(router):
    deliver(router, directory(max_queue=1), SUPERVISOR)
    routed(router, Task(id="t1", type="echo"))
    result = only_result(deliver(router, Task(id="t2", type="echo"), CALLER))
    assert result.task_id == "t2" and result.error.code is ErrorCode.OVERLOADED


def test_a_lost_service_answers_its_running_task_once_with_the_lost_code(router, clock):
    sent_task = routed(router, Task(id="t1", type="echo", timeout_s=2.0))
    sent = deliver(router, directory(address=None, status=ServiceStatus.UNHEALTHY,
                                     lost_reason="died", lost_code=ErrorCode.SERVICE_UNAVAILABLE.value),
                   SUPERVISOR)
    result = only_result(sent)
    assert result.task_id == "t1" and result.error.code is ErrorCode.SERVICE_UNAVAILABLE
    assert "died" in result.error.message

    # Neither its deadline nor a result from the dead generation answers it again.
    clock.advance(5.0)
    assert to(fire_timers(router), CALLER) == []
    sent = deliver(router, ServiceTaskDone(sent_task.request_id, TaskResult.success("t1", 1)), SERVICE)
    assert to(sent, CALLER) == []
    assert late_results(router) == 1


def test_a_lost_service_leaves_other_services_tasks_alone(router):
    deliver(router, directory(name="other", address="other-actor"), SUPERVISOR)
    deliver(router, ExecuteTask(Task(id="t1", type="x"), "other"), CALLER)
    sent = deliver(router, directory(address=None, status=ServiceStatus.UNHEALTHY,
                                     lost_reason="died", lost_code=ErrorCode.SERVICE_UNAVAILABLE.value),
                   SUPERVISOR)
    assert to(sent, CALLER) == []


def test_a_passed_deadline_is_answered_once_with_timeout_and_a_late_result_is_counted(router, clock):
    sent_task = routed(router, Task(id="t1", type="echo", timeout_s=1.0))
    assert sent_task.budget_s == pytest.approx(1.0)

    clock.advance(0.5)
    assert to(fire_timers(router), CALLER) == []  # not yet due
    assert router.timers, "the router must keep a timer for the task's deadline"
    clock.advance(0.6)
    result = only_result(fire_timers(router))
    assert result.task_id == "t1" and result.error.code is ErrorCode.TIMEOUT
    assert result.error.details["service"] == "echo"

    clock.advance(5.0)
    assert to(fire_timers(router), CALLER) == []
    sent = deliver(router, ServiceTaskDone(sent_task.request_id, TaskResult.success("t1", 1)), SERVICE)
    assert to(sent, CALLER) == []
    assert late_results(router) == 1


def test_draining_refuses_new_tasks_and_reports_when_the_last_is_answered(router):
    sent_task = routed(router, Task(id="t1", type="echo"))
    assert deliver(router, Drain(drain_s=5.0, token=TOKEN), SUPERVISOR) == []

    refused = only_result(deliver(router, Task(id="t2", type="echo"), CALLER))
    assert refused.task_id == "t2" and refused.error.code is ErrorCode.SHUTTING_DOWN

    sent = deliver(router, ServiceTaskDone(sent_task.request_id, TaskResult.success("t1", 1)), SERVICE)
    assert only_result(sent).ok
    assert to(sent, SUPERVISOR) == [DrainDone(answered_with_timeout=0, token=TOKEN)]


def test_a_drain_that_runs_out_answers_what_is_left_with_timeout(router):
    routed(router, Task(id="t1", type="echo"))
    deliver(router, Drain(drain_s=5.0, token=TOKEN), SUPERVISOR)
    assert ("drain",) in [payload for _, payload in router.timers]
    sent = fire_timers(router)
    result = only_result(sent)
    assert result.error.code is ErrorCode.TIMEOUT and "drain" in result.error.message
    assert to(sent, SUPERVISOR) == [DrainDone(answered_with_timeout=1, token=TOKEN)]


def test_a_drain_with_nothing_in_flight_is_done_at_once(router):
    sent = deliver(router, Drain(drain_s=5.0, token=TOKEN), SUPERVISOR)
    assert to(sent, SUPERVISOR) == [DrainDone(answered_with_timeout=0, token=TOKEN)]


@pytest.mark.parametrize("msg", [
    Drain(drain_s=1.0, token="wrong"),
    directory(address=None, status=ServiceStatus.UNHEALTHY, token="wrong"),
])
def test_control_messages_without_the_supervisors_token_are_refused(router, msg):
    [reply] = to(deliver(router, msg, "stranger"), "stranger")
    assert isinstance(reply, ErrorReply) and reply.error.code is ErrorCode.INVALID_INPUT
    routed(router, Task(id="t1", type="echo"))  # the route table is unchanged, no drain began


def test_the_deadline_is_the_tasks_own_else_its_services_else_the_systems(router):
    deliver(router, directory(generation=2, task_timeout_s=5.0), SUPERVISOR)  # a restart
    assert routed(router, Task(id="t1", type="echo")).budget_s == pytest.approx(5.0)
    assert routed(router, Task(id="t2", type="echo", timeout_s=1.5)).budget_s == pytest.approx(1.5)


def test_a_task_before_set_up_is_held_until_router_setup_brings_the_directory(clock):
    router = harness(TaskRouter)
    assert deliver(router, Task(id="t1", type="echo"), CALLER) == []
    sent = deliver(router, RouterSetup(routes={"echo": "echo"}, context=None, fetch_context=frozenset(),
                                       default_timeout_s=30.0, token=TOKEN, directory=(directory(),)),
                   SUPERVISOR)
    assert [(who, type(m)) for who, m in sent] == [(SERVICE, ServiceTask)]


def check_junk(router: TaskRouter, msg) -> None:
    sent = deliver(router, msg, "stranger")
    assert [e for e in errors(sent) if e.code is ErrorCode.EXECUTION_ERROR] == [], msg
    assert to(sent, SERVICE) == []
    after = routed(router, Task(id="after", type="echo"))
    assert only_result(deliver(router, ServiceTaskDone(after.request_id, TaskResult.success("after", 1)),
                               SERVICE)).ok


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msg=forged)
def test_junk_is_refused_by_type_and_the_router_keeps_routing(router, msg):
    check_junk(router, msg)


@pytest.mark.parametrize("msg", every_message_forged(), ids=lambda m: f"{type(m).__name__}")
def test_every_message_forged_is_refused_by_type(router, msg):
    check_junk(router, msg)


def test_a_hosts_direct_task_counts_join_the_routers_metrics(router):
    from routing.metrics import RouterMetrics
    from messages.system import DirectTaskMetrics
    from messages.task import TaskMetrics
    theirs = RouterMetrics()
    theirs.record("echo", "echo", TaskResult.success("d1", 1, TaskMetrics(total_ms=2.0,
                                                                          execution_ms=1.0)))
    assert deliver(router, DirectTaskMetrics(theirs.snapshot({}, 0)), "a-host") == []
    done = routed(router, Task(id="t1", type="echo"))
    deliver(router, ServiceTaskDone(done.request_id, TaskResult.success("t1", 1)), SERVICE)
    [report] = to(deliver(router, GetRouterMetrics(), CALLER), CALLER)
    assert report.requests[("echo", "echo", "ok")] == 2
    counts, total = report.stages[("echo", "total")]
    assert sum(counts) == 2 and total >= 0.002
