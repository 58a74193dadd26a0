"""The ServiceActor's handling of messages, in one process, with the echo kind.

The model runs on the actor's real worker thread; the test hands the actor the
WatchMessage Thespian would send when the worker's pipe becomes readable, so
the order of events is the test's, not the scheduler's.
"""
from __future__ import annotations

import time

import pytest
from hypothesis import HealthCheck, given, settings
from thespian.actors import ActorExitRequest

import actors.service_actor as service_module
from actors.service_actor import ServiceActor
from messages.errors import ErrorCode
from messages.service import (
    ConfigureService, GetStatus, Initialize, ServiceStatus, ServiceTask, ServiceTaskDone, Shutdown,
    StatusReply,
)
from messages.system import ErrorReply
from messages.task import Task, TaskResult
from services.echo import EchoSettings
from tests.junk import every_message_forged, forged
from tests.unit.actor_harness import Clock, deliver, errors, fire_timers, harness, to, wait_for_worker

TOKEN = "supervisor-token"
SUPERVISOR, ROUTER, CALLER = "supervisor", "router", "caller"


def configure(**changes) -> ConfigureService:
    fields = dict(name="echo", kind="echo", settings=EchoSettings(), max_queue=8, max_batch_size=1,
                  max_batch_delay_ms=0.0, generation=1, default_task_timeout_s=30.0, token=TOKEN)
    return ConfigureService(**{**fields, **changes})


@pytest.fixture
def clock(monkeypatch) -> Clock:
    clock = Clock(time.monotonic())  # near the worker's own clock, so timings stay sane
    monkeypatch.setattr(service_module, "time", clock)
    return clock


@pytest.fixture
def new_actor(clock):
    made = []

    def new_actor(**changes) -> ServiceActor:
        actor = harness(ServiceActor)
        made.append(actor)
        if changes.pop("configured", True):
            [reply] = to(deliver(actor, configure(**changes), SUPERVISOR), SUPERVISOR)
            assert isinstance(reply, StatusReply) and reply.status is ServiceStatus.OFFLINE
        return actor

    yield new_actor
    for actor in made:  # stops the worker thread
        deliver(actor, ActorExitRequest(), "thespian")


@pytest.fixture
def serving(new_actor) -> ServiceActor:
    """A configured service with its model loaded (one for all of a Hypothesis test's examples)."""
    actor = new_actor()
    online(actor)
    return actor


def online(actor: ServiceActor) -> None:
    """Load the model; the caller that asked and the supervisor both hear it is online."""
    assert deliver(actor, Initialize(), CALLER) == []
    sent = wait_for_worker(actor)
    assert [(who, m.status) for who, m in sent] == [(CALLER, ServiceStatus.ONLINE),
                                                    (SUPERVISOR, ServiceStatus.ONLINE)]


def status(actor: ServiceActor) -> ServiceStatus:
    [reply] = to(deliver(actor, GetStatus(), CALLER), CALLER)
    return reply.status


def task_done(sent: list, request_id: int) -> TaskResult:
    """The one answer to ``request_id`` in ``sent``, which must be addressed to the router."""
    answers = [m for m in to(sent, ROUTER) if isinstance(m, ServiceTaskDone) and m.request_id == request_id]
    assert len(answers) == 1, sent
    return answers[0].result


def test_a_service_task_loads_the_model_runs_and_is_answered_with_its_request_id(new_actor):
    actor = new_actor()
    assert deliver(actor, ServiceTask(7, Task(id="t1", type="echo", data="hi"), 5.0), ROUTER) == []
    sent = wait_for_worker(actor)  # the model loaded on demand; the task starts at once
    assert [m.status for m in to(sent, SUPERVISOR)] == [ServiceStatus.ONLINE]
    result = task_done(wait_for_worker(actor), 7)
    assert result.ok and result.task_id == "t1" and result.data == "hi"


def test_a_direct_task_is_answered_to_its_sender_as_a_task_result(new_actor):
    actor = new_actor()
    online(actor)
    assert deliver(actor, Task(id="t1", type="echo", data=[1, 2]), CALLER) == []
    [result] = to(wait_for_worker(actor), CALLER)
    assert isinstance(result, TaskResult) and result.ok and result.data == [1, 2]


def test_a_direct_task_without_a_timeout_gets_the_services_own_and_is_answered_once(new_actor, clock):
    actor = new_actor(settings=EchoSettings(hang_s=0.05), task_timeout_s=2.0)
    online(actor)
    deliver(actor, Task(id="t1", type="echo", metadata={"inject": "hang"}), CALLER)
    clock.advance(1.9)
    assert to(fire_timers(actor), CALLER) == []
    clock.advance(0.2)
    [result] = to(fire_timers(actor), CALLER)
    assert result.error.code is ErrorCode.TIMEOUT
    assert to(wait_for_worker(actor), CALLER) == []  # the hung call's late end answers nothing


def test_past_max_queue_a_task_is_refused_at_once_with_overloaded(new_actor):
    actor = new_actor(max_queue=2)
    # The model is still loading (its end is not handed to the actor): both wait in the queue.
    assert deliver(actor, ServiceTask(1, Task(id="t1", type="echo"), 5.0), ROUTER) == []
    assert deliver(actor, ServiceTask(2, Task(id="t2", type="echo"), 5.0), ROUTER) == []
    refused = task_done(deliver(actor, ServiceTask(3, Task(id="t3", type="echo"), 5.0), ROUTER), 3)
    assert refused.task_id == "t3" and refused.error.code is ErrorCode.OVERLOADED
    assert refused.error.details["max_queue"] == 2
    wait_for_worker(actor)  # loaded; t1 runs
    assert task_done(wait_for_worker(actor), 1).ok
    assert task_done(wait_for_worker(actor), 2).ok


def test_work_before_set_up_is_held_until_configure_service(new_actor):
    actor = new_actor(configured=False)
    assert deliver(actor, ServiceTask(1, Task(id="t1", type="echo", data=5), 5.0), ROUTER) == []
    assert deliver(actor, Task(id="t2", type="echo", data=6), CALLER) == []
    sent = deliver(actor, configure(), SUPERVISOR)
    assert [type(m) for m in to(sent, SUPERVISOR)] == [StatusReply]
    assert to(sent, ROUTER) == [] and to(sent, CALLER) == []  # held, not refused
    wait_for_worker(actor)  # the model loaded for the held task
    assert task_done(wait_for_worker(actor), 1).data == 5
    [direct] = to(wait_for_worker(actor), CALLER)
    assert direct.ok and direct.data == 6


def test_a_failed_load_answers_queued_tasks_with_init_error(new_actor):
    actor = new_actor(settings=EchoSettings(fail_init=True))
    deliver(actor, ServiceTask(1, Task(id="t1", type="echo"), 5.0), ROUTER)
    sent = wait_for_worker(actor)
    assert task_done(sent, 1).error.code is ErrorCode.INIT_ERROR
    [reply] = to(sent, SUPERVISOR)
    assert reply.status is ServiceStatus.FAILED and reply.error.code is ErrorCode.INIT_ERROR


def test_shutdown_without_the_supervisors_token_is_refused(new_actor):
    actor = new_actor()
    online(actor)
    [reply] = to(deliver(actor, Shutdown(drain_s=1.0, token="wrong"), "stranger"), "stranger")
    assert isinstance(reply, ErrorReply) and reply.error.code is ErrorCode.INIT_ERROR
    assert status(actor) is ServiceStatus.ONLINE
    deliver(actor, ServiceTask(1, Task(id="t1", type="echo"), 5.0), ROUTER)
    assert task_done(wait_for_worker(actor), 1).ok


def test_shutdown_with_the_token_refuses_new_work_and_releases_the_model(new_actor):
    actor = new_actor()
    online(actor)
    assert deliver(actor, Shutdown(drain_s=1.0, token=TOKEN), SUPERVISOR) == []
    assert status(actor) is ServiceStatus.STOPPING
    refused = task_done(deliver(actor, ServiceTask(1, Task(id="t1", type="echo"), 5.0), ROUTER), 1)
    assert refused.error.code is ErrorCode.SHUTTING_DOWN
    [released] = to(wait_for_worker(actor), SUPERVISOR)
    assert released.status is ServiceStatus.OFFLINE and not released.initialized


def check_junk(actor: ServiceActor, msg) -> None:
    sent = deliver(actor, msg, "stranger")
    assert [e for e in errors(sent) if e.code is ErrorCode.EXECUTION_ERROR] == [], msg
    assert status(actor) is ServiceStatus.ONLINE
    deliver(actor, Task(id="after", type="echo", data=1), CALLER)
    [result] = to(wait_for_worker(actor), CALLER)
    assert result.ok and result.data == 1


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msg=forged)
def test_junk_is_refused_by_type_and_the_service_keeps_serving(serving, msg):
    check_junk(serving, msg)


@pytest.mark.parametrize("msg", every_message_forged(), ids=lambda m: f"{type(m).__name__}")
def test_every_message_forged_is_refused_by_type(serving, msg):
    check_junk(serving, msg)
