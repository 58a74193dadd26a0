"""The Supervisor actor: parent of every other actor, and the health policy's hands.

It creates the context actor, the router and one actor per configured
service, each from its child spec (children.py); it is their real Thespian
parent, so it hears when one exits. It also sends heartbeats, because the exit
notice does not always arrive, and because a hung process does not exit. What
to do about an exit or a bad heartbeat is decided by plain policy classes
(restart_policy, health_policy); this actor carries their decisions out and
tells the router. Applying a new configuration (ApplyConfig) is planned by
``plan`` and carried out by the ``Rollouts`` mixin (rollout.py).

Services with requirements (a ``requires`` table, or a CUDA device) run on a
member of the leader's Thespian convention that meets them (placement.py):
created with ``targetActorRequirements`` naming that member, so Thespian's
admin forwards the creation there; the supervisor stays their parent. It pings
each member's admin on the heartbeat and places a lost member's services
again. Only the leader's own processes are killed by pid.
"""
from __future__ import annotations

import importlib
import itertools
import os
import secrets
import time
from collections import deque
from typing import Any

from thespian.actors import (
    Actor, ActorExitRequest, ActorSystemConventionUpdate, ChildActorExited, WakeupMessage,
)
from thespian.system.messages.admin import QueryAck, QueryExists

from actors.base import GrymActor
from messages.base import Message
from messages.errors import (
    Conflict, ErrorCode, InitError, PermissionDenied, ServiceNotFound, ServiceUnavailable,
    ShuttingDown,
)
from messages.service import (
    GetMetrics, Heartbeat, HeartbeatAck, Initialize, ServiceMetrics, ServiceStatus,
    ServiceStopped, Shutdown, StatusReply,
)
from messages.system import (
    ApplyConfig, Drain, DrainDone, ErrorReply, GetHealth, GetRoutes, GetService, GetServiceMetrics,
    GetSystemInfo, HealthCause, HealthEvent, HealthEventKind, HealthReport, ListServices,
    MemberInfo, MetricsReport, RestartService, Routes, ServiceList, ShutdownSystem, StartSystem,
    Subscribed, SubscribeHealth, SubscribeRoutes, SystemInfo, SystemStopped, SystemStopping,
    RoutesApplied, UnsubscribeHealth, UnsubscribeRoutes,
)
from runtime.processes import end_runtime, exit_within

from .children import (
    CONTEXT, ROUTER, Child, Lost, SpawnEnv, core_children, directory_entry, kill_process,
    own_children, preload, process_gone, service_child,
)
from .config import SystemConfig
from .health_policy import HealthTracker
from .placement import Convention, Member
from .rollout import Rollouts
from .scaling import Scaling

S = ServiceStatus
E = HealthEventKind
METRICS_WAIT_S = 1.0
EVENT_LOG_SIZE = 1000
MAX_INFO_WAITERS = 1000
MAX_ROUTE_SUBSCRIBERS = 1000
EXIT_AFTER_STOP_S = 2.0  # an exit request after a completed stop: the process ends by then


class Supervisor(Scaling, Rollouts, GrymActor, Actor):
    handlers = {
        StartSystem: "on_start", StatusReply: "on_status", HeartbeatAck: "on_ack",
        ChildActorExited: "on_child_exited", WakeupMessage: "on_wakeup",
        GetService: "on_get_service", ListServices: "on_list", GetSystemInfo: "on_info",
        SubscribeHealth: "on_subscribe", UnsubscribeHealth: "on_unsubscribe",
        GetHealth: "on_get_health", GetServiceMetrics: "on_get_metrics",
        ServiceMetrics: "on_metrics", ShutdownSystem: "on_shutdown", DrainDone: "on_drained",
        ActorExitRequest: "on_exit", ErrorReply: "on_error_reply", Routes: "on_routes",
        ServiceStopped: "on_service_stopped", RestartService: "on_restart_service",
        SubscribeRoutes: "on_subscribe_routes", UnsubscribeRoutes: "on_unsubscribe_routes",
        ApplyConfig: "on_apply", RoutesApplied: "on_routes_applied",
        ActorSystemConventionUpdate: "on_convention", QueryAck: "on_member_answer",
    }

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.config: SystemConfig | None = None
        # Kept apart, so that no service name can stand for a core child.
        self.core: dict[str, Child] = {}       # the context actor and the router
        self.services: dict[str, Child] = {}
        self.starter = None
        self.ready_probe_sent = False
        self.ready = False
        self.info_waiters: deque[Any] = deque(maxlen=MAX_INFO_WAITERS)
        self.launcher = None                    # the launcher's endpoint (StartSystem's sender)
        self.launcher_pid: int | None = None
        # Which start of the runtime this is: host handles re-join when it changes.
        self.incarnation = secrets.token_hex(8)
        self.heartbeat_seq = itertools.count(1)
        self.events: deque[HealthEvent] = deque(maxlen=EVENT_LOG_SIZE)
        self.event_seq = itertools.count(1)
        self.event_counts: dict[str, int] = {}
        self.subscribers: list[tuple[Any, frozenset[E]]] = []  # addresses are unhashable
        self.route_subscribers: list[Any] = []  # hosts that route their own tasks
        self.metrics_requests: dict[int, dict[str, Any]] = {}
        self.metrics_ids = itertools.count(1)
        self.shutdown_waiters: list[Any] = []  # each asker of a stop gets SystemStopped
        self.stopped = False
        self.shutting_down = False
        # Marks control messages as ours (see TaskRouter._from_supervisor).
        self.token = secrets.token_hex(16)
        self.convention: Convention | None = None
        self._init_rollouts()
        self._init_scaling()

    # -- start-up -----------------------------------------------------------------
    def on_start(self, msg: StartSystem, sender: Any) -> None:
        if self.config is not None:
            self.send(sender, self._system_info())
            return
        self.config = SystemConfig.from_dict(msg.config)
        self.starter = self.launcher = sender
        self.launcher_pid = msg.launcher_pid
        self.convention = Convention.of(msg.capabilities, self.config.health.missed_heartbeats)
        self.notifyOnSystemRegistrationChanges(True)  # members joining and leaving
        preload(self.config)  # model libraries, before forking service processes
        self.core = {spec.name: Child.of(spec) for spec in core_children()}
        self.services = {name: Child.of(service_child(spec))
                         for name, spec in self.config.services.items()}
        for child in self._children():
            # The same for the actor classes, which the children import by name.
            importlib.import_module(child.spec.actor_class.rpartition(".")[0])
        for child in self._children():
            self._spawn(child)
        self.wakeupAfter(self.config.health.heartbeat_interval_s, payload=("heartbeat",))
        self.log.info("system_starting", services=sorted(self.config.services))
        self._maybe_ready()

    def _maybe_ready(self) -> None:
        """Once every eager service is online (or failed), ask the router which
        services it knows, and answer the starter when it knows them all: with the
        spawn start method the router can start after its services, and a caller
        told "ready" must find it set up."""
        if self.starter is None or self.ready_probe_sent:
            return
        waiting = [c for c in self.services.values() if c.spec.service.eager
                   and c.status not in (S.ONLINE, S.DEGRADED, S.STOPPED, S.FAILED)]
        if not waiting:
            self.ready_probe_sent = True
            self.send(self.core[ROUTER].address, GetRoutes())

    def on_routes(self, msg: Routes, sender: Any) -> None:
        if self.starter is None or not self.ready_probe_sent:
            return
        published = {c.name for c in self.services.values() if c.address is not None}
        if not published <= set(msg.services):
            self.wakeupAfter(0.02, payload=("ready-probe",))  # updates still on their way
            return
        info = self._system_info()
        self.send(self.starter, info)
        self.starter = None
        self.ready = True
        while self.info_waiters:  # hosts that joined while the runtime was starting
            self.send(self.info_waiters.popleft(), info)
        self.log.info("system_ready", routed_services=list(msg.services))

    # -- children ---------------------------------------------------------------------
    def _spawn(self, child: Child, config: SystemConfig | None = None) -> None:
        """Start a new generation of ``child`` from its spec: the same steps for every
        child. ``config``: an apply's new one, for a child it stages."""
        spec, config = child.spec, config or self.config
        child.generation = self._next_generation(child.name)
        child.status = S.OFFLINE if spec.reports_status else S.ONLINE
        child.pid, child.ending, child.degraded_cause = None, None, None
        child.reported, child.ongoing = False, 0
        child.health = HealthTracker(config.health, spec.max_memory,
                                     started_at=time.monotonic())
        requirements = spec.service.placement() if spec.service else {}
        # A service's replicas spread over the members that meet its requirements, as Ray
        # Serve spreads a deployment's: each goes where the fewest of them run already.
        spread = spec.service is not None and spec.service.replicas > 1
        try:
            member = self.convention.place(
                requirements, self._replica_load(child) if spread else self._load()) \
                if requirements or spread else self.convention.local
        except ServiceUnavailable as exc:
            self._unplaceable(child, exc.message)
            return
        child.member, child.local, child.unplaced = member.name, member.local, False
        before = own_children() if member.local else set()
        # Named by its member, the child is created there: by Thespian's admin, which
        # asks the class's actorSystemCapabilityCheck (ServiceActor) of each system.
        child.address = self.createActor(spec.actor_class, targetActorRequirements={
            **requirements, "member": member.name} if requirements or spread else None)
        # Its pid from birth, for the heartbeat's check: Thespian never reports the exit
        # of a child that dies before its transport connects back (it cannot address it).
        born = own_children() - before if member.local else set()
        child.pid = born.pop() if len(born) == 1 else None
        self.send(child.address, spec.setup(child, self._spawn_env(config)))
        self._announce(child)
        self.log.info("child_started", child=child.name, generation=child.generation,
                      member=child.member)

    def _unplaceable(self, child: Child, reason: str) -> None:
        """No member meets the child's requirements: it fails at once, with the reason
        (a restart would fail the same way); a member that joins later starts it."""
        child.address, child.pid, child.member = None, None, None
        child.last_error, child.unplaced = reason, True
        self.log.error("child_unplaceable", child=child.name, reason=reason)
        if self._rollout_child_down(child, reason, ErrorCode.SERVICE_UNAVAILABLE):
            return  # a staged child: the apply is aborted with the reason
        child.status = S.FAILED
        self._event(E.SERVICE_FAILED, child, reason)
        self._announce(child, (reason, ErrorCode.SERVICE_UNAVAILABLE))
        self._answer_waiters(child)
        self._maybe_ready()

    def _load(self) -> dict[str, int]:
        """How many children run on each member (placement spreads them)."""
        load: dict[str, int] = {}
        for child in self._children():
            if child.address is not None and child.member is not None:
                load[child.member] = load.get(child.member, 0) + 1
        return load

    def _replica_load(self, child: Child) -> dict[str, int]:
        """How many of ``child``'s fellow replicas run on each member."""
        service = child.spec.service.serves
        load: dict[str, int] = {}
        for c in self._children():
            if c is not child and c.address is not None and c.member is not None \
                    and c.spec.service is not None and c.spec.service.serves == service:
                load[c.member] = load.get(c.member, 0) + 1
        return load

    def _end_process(self, child: Child) -> None:
        """Make sure a child's process ends: by pid on the leader's host; a member's
        child is asked to exit (its pid means nothing here)."""
        if child.local:
            kill_process(child.pid)
        elif child.address is not None:
            self.send(child.address, ActorExitRequest())

    def _spawn_env(self, config: SystemConfig | None = None) -> SpawnEnv:
        return SpawnEnv(config=config or self.config, token=self.token,
                        core={c.name: c.address for c in self.core.values()},
                        directory=tuple(directory_entry(c, self.token)
                                        for c in self.services.values()))

    def _announce(self, child: Child, lost: Lost | None = None) -> None:
        """Tell the router what it must know of ``child`` now (where it is, whether
        it takes work, and with ``lost`` that its last generation is gone). A staged
        child is not announced: the router learns of it when the apply moves traffic."""
        if child.staged:
            return
        msg = child.spec.announce(child, self.token, lost)
        if msg is not None:
            self._tell_router(msg)

    def _tell_router(self, msg: Message) -> None:
        """To the router, and to every host that keeps a replica of its table."""
        router = self.core.get(ROUTER)
        if router is not None and router.address is not None:
            self.send(router.address, msg)
        for host in self.route_subscribers:
            self.send(host, msg)

    def on_subscribe_routes(self, msg: SubscribeRoutes, sender: Any) -> None:
        self._drop_route_subscriber(sender)
        if len(self.route_subscribers) >= MAX_ROUTE_SUBSCRIBERS:
            self.route_subscribers.pop(0)  # the oldest: most likely a host that died
        self.route_subscribers.append(sender)
        router = self.core[ROUTER]
        self.send(sender, router.spec.setup(router, self._spawn_env()))

    def on_unsubscribe_routes(self, msg: UnsubscribeRoutes, sender: Any) -> None:
        self._drop_route_subscriber(sender)

    def _drop_route_subscriber(self, address: Any) -> None:
        self.route_subscribers = [a for a in self.route_subscribers if a != address]

    def _children(self) -> list[Child]:
        staged = self.rollout.staged.values() if self.rollout is not None else ()
        return [*self.core.values(), *self.services.values(), *staged, *self.retiring]

    def _child_at(self, address: Any) -> Child | None:
        # Thespian addresses are not hashable; there are only a handful of children.
        if address is None:
            return None
        return next((c for c in self._children() if c.address == address), None)

    def on_status(self, msg: StatusReply, sender: Any) -> None:
        child = self._child_at(sender)
        if child is None:
            return
        child.reported = True
        if child.retiring:
            self._retiring_status(child, msg.status, msg.pid)
            return
        child.pid = msg.pid
        if msg.status is S.FAILED and msg.error is not None:
            self._child_down(child, f"failed to initialize: {msg.error.message}",
                             ErrorCode.INIT_ERROR)
            return
        was = child.status
        child.status = msg.status
        if msg.initialized:
            child.was_initialized = True
        if msg.status in (S.ONLINE, S.DEGRADED):
            self._answer_waiters(child)
        if was is not msg.status:
            self._announce(child)
        self._maybe_ready()
        self._maybe_stopped()
        self._rollout_progress()

    def on_service_stopped(self, msg: ServiceStopped, sender: Any) -> None:
        """A service has released its model and asks to end normally: end it, and
        count the exit that follows as normal (no restart if it is transient)."""
        child = self._child_at(sender)
        if child is None or child.generation != msg.generation or child.ending is not None:
            return
        child.ending = msg.reason
        self.log.info("child_ending", child=child.name, reason=msg.reason)
        if child.status is not S.STOPPING:
            child.status = S.STOPPING
            self._announce(child)
        self.send(child.address, ActorExitRequest())

    def on_child_exited(self, msg: ChildActorExited, sender: Any) -> None:
        child = self._child_at(msg.childAddress)
        if child is not None:
            self._child_gone(child, "process exited")

    def _child_gone(self, child: Child, how: str) -> None:
        """Its process is gone, not by our health policy's hand: a normal exit
        if the child asked to end, a crash otherwise."""
        if child.ending is not None:
            self._child_down(child, f"ended normally: {child.ending}", ErrorCode.SHUTTING_DOWN,
                             normal=True)
        else:
            self._child_down(child, how, ErrorCode.EXECUTION_ERROR)

    def _child_down(self, child: Child, reason: str, code: ErrorCode, normal: bool = False) -> None:
        """A child is gone or must go: make sure of it, tell the router, decide a restart.

        ``code`` is what the callers of its tasks in flight get."""
        self._end_process(child)
        child.address, child.pid, child.member = None, None, None
        child.last_error = reason
        if self.shutting_down:
            child.status = S.OFFLINE
            self._maybe_stopped()
            return
        if self._rollout_child_down(child, reason, code):
            return  # staged or retiring: an apply's, not the restart policy's
        child.status = S.STOPPED if normal else S.UNHEALTHY
        (self.log.info if normal else self.log.warning)(
            "child_down", child=child.name, generation=child.generation, reason=reason)
        self._announce(child, (reason, code))
        decision = child.restart.on_exit(time.monotonic(), abnormal=not normal)
        if decision.restart:
            self._event(E.SERVICE_RESTARTED, child, f"{reason}; {decision.reason}")
            if decision.delay_s <= 0:
                self._spawn(child)
            else:
                self.wakeupAfter(decision.delay_s, payload=("restart", child, child.generation))
            return
        if normal:
            self._event(E.SERVICE_STOPPED, child, f"{reason}; {decision.reason}")
        else:
            child.status = S.FAILED
            self.log.error("child_failed", child=child.name, reason=decision.reason)
            self._event(E.SERVICE_FAILED, child, f"{reason}; {decision.reason}")
            self._announce(child)
        self._answer_waiters(child)
        self._maybe_ready()

    # -- the convention's members ------------------------------------------------------------
    def on_convention(self, msg: ActorSystemConventionUpdate, sender: Any) -> None:
        """Thespian's word that an actor system joined the leader's convention or left it."""
        if not msg.remoteAdded:
            member = self.convention.left(msg.remoteAdminAddress)
            if member is not None:
                self._member_lost(member, "it left the convention")
            return
        try:
            member = self.convention.joined(msg.remoteAdminAddress, msg.remoteCapabilities or {})
        except ServiceUnavailable as exc:
            self.log.error("member_refused", reason=exc.message)
            return
        self.log.info("member_joined", member=member.name, capabilities=member.capabilities)
        self._place_unplaced(f"member {member.name} joined")

    def on_member_answer(self, msg: QueryAck, sender: Any) -> None:
        member = self.convention.answered(sender)
        if member is not None:
            self.log.info("member_back", member=member.name)
            self._place_unplaced(f"member {member.name} answers again")

    def _ping_members(self) -> None:
        ping, lost = self.convention.tick()
        for member in lost:
            self._member_lost(member, f"missed {self.config.health.missed_heartbeats} pings")
        for member in ping:
            self.send(member.address, QueryExists())

    def _member_lost(self, member: Member, why: str) -> None:
        """A member left or stopped answering: its children are down (its processes may be
        gone with it), and are placed again on the members that remain."""
        self.log.warning("member_lost", member=member.name, reason=why)
        for child in self._children():
            if child.member == member.name and not child.local and child.address is not None:
                self._child_down(child, f"its member {member.name} was lost: {why}",
                                 ErrorCode.SERVICE_UNAVAILABLE)

    def _place_unplaced(self, why: str) -> None:
        """Start again the services that failed because no member met their requirements."""
        if self.shutting_down:
            return
        for child in self.services.values():
            if child.unplaced and child.status is S.FAILED:
                try:
                    self.convention.place(child.spec.service.placement(), self._load())
                except ServiceUnavailable as exc:
                    child.last_error = exc.message  # still nowhere to go; now for this reason
                    continue
                child.restart.restart_by_request()
                self._event(E.SERVICE_RESTARTED, child, f"{why}; it had failed: {child.last_error}")
                self._spawn(child)

    def _members_info(self) -> tuple[MemberInfo, ...]:
        return tuple(m.info(tuple(c.name for c in self._children()
                                  if c.member == m.name and c.address is not None))
                     for m in self.convention.members())

    # -- health -----------------------------------------------------------------------
    def _heartbeat_tick(self) -> None:
        if process_gone(self.launcher_pid):
            self._launcher_gone()
        self._ping_members()  # first: a lost member's children are placed elsewhere
        seq = next(self.heartbeat_seq)
        for child in self._children():
            if child.address is None:
                continue
            if child.local and process_gone(child.pid):
                self._child_gone(child, "process died (found by heartbeat)")
                continue
            if child.status is S.STOPPING:
                continue  # releasing its model (which may hold the GIL): its shutdown budget rules
            if child.health.unanswered == 0:
                # One heartbeat out at a time: Thespian keeps a send pending until the child
                # reads it, and every other send of this actor waits once 20 are (its
                # MAX_PENDING_TRANSMITS); a child that reads nothing for seconds (a spawned
                # one importing torch) must not collect them. Each tick still counts.
                self.send(child.address, Heartbeat(seq))
            child.health.heartbeat_sent()
            verdict = child.health.assess(time.monotonic())
            if verdict.kill:
                self._event(E.SERVICE_UNHEALTHY, child, verdict.reason, S.UNHEALTHY, verdict.cause)
                self._child_down(child, f"was killed: {verdict.reason}",
                                 verdict.code or ErrorCode.SERVICE_UNAVAILABLE)
            elif child.spec.service is not None and child.status in (S.ONLINE, S.DEGRADED):
                if verdict.state is not child.status:
                    kind = E.SERVICE_DEGRADED if verdict.state is S.DEGRADED else E.SERVICE_RECOVERED
                    child.status = verdict.state
                    self._event(kind, child, verdict.reason, cause=verdict.cause)
                    self._announce(child)
                elif verdict.state is S.DEGRADED and verdict.cause is not child.degraded_cause:
                    # still degraded, for another reason
                    self._event(E.SERVICE_DEGRADED, child, verdict.reason, cause=verdict.cause)
                child.degraded_cause = verdict.cause if verdict.state is S.DEGRADED else None
        self._autoscale_tick()

    def on_ack(self, msg: HeartbeatAck, sender: Any) -> None:
        child = self._child_at(sender)
        if child is not None and child.health is not None:
            child.pid, child.ongoing = msg.pid, msg.queue_depth
            child.health.ack_received(msg)

    def _event(self, kind: E, child: Child, reason: str, status: S | None = None,
               cause: HealthCause | None = None) -> None:
        event = HealthEvent(seq=next(self.event_seq), kind=kind, service=child.name,
                            status=status or child.status, reason=reason, at=time.time(),
                            cause=cause)
        self.events.append(event)
        self.event_counts[kind.value] = self.event_counts.get(kind.value, 0) + 1
        self.log.info("health_event", kind=kind.value, service=child.name, reason=reason)
        for address, kinds in self.subscribers:
            if not kinds or kind in kinds:
                self.send(address, event)

    def on_subscribe(self, msg: SubscribeHealth, sender: Any) -> None:
        self._drop_subscriber(sender)
        self.subscribers.append((sender, frozenset(msg.kinds)))
        last = self.events[-1].seq if self.events else 0
        self.send(sender, Subscribed(last_seq=last))
        if msg.since is not None:
            for event in self.events:
                if event.seq > msg.since and (not msg.kinds or event.kind in msg.kinds):
                    self.send(sender, event)

    def on_unsubscribe(self, msg: UnsubscribeHealth, sender: Any) -> None:
        self._drop_subscriber(sender)
        self.send(sender, Subscribed(last_seq=self.events[-1].seq if self.events else 0))

    def _drop_subscriber(self, address: Any) -> None:
        self.subscribers = [(a, k) for a, k in self.subscribers if a != address]

    def on_get_health(self, msg: GetHealth, sender: Any) -> None:
        self.send(sender, HealthReport(
            statuses={c.name: c.status for c in self.services.values()}, events=tuple(self.events),
            counts=dict(self.event_counts)))

    # -- registry and discovery ------------------------------------------------------------
    def on_get_service(self, msg: GetService, sender: Any) -> None:
        child = self._resolve_service(msg.name)
        if child is None:
            raise ServiceNotFound(f"no service named {msg.name!r}; configured: "
                                  f"{', '.join(sorted(self.services))}", {"service": msg.name})
        if child.status in (S.FAILED, S.STOPPED):
            raise ServiceUnavailable(f"service {msg.name!r} has {child.status.value}: "
                                     f"{child.last_error}", {"service": msg.name})
        if self.shutting_down:
            raise ShuttingDown("the system is shutting down")
        if not msg.initialize or child.status in (S.ONLINE, S.DEGRADED):
            self.send(sender, child.info())
            return
        child.waiters.append(sender)
        if child.address is not None and child.status is S.OFFLINE:
            self.send(child.address, Initialize())

    def _answer_waiters(self, child: Child) -> None:
        waiters, child.waiters = child.waiters, []
        for waiter in waiters:
            if child.status is S.FAILED:
                self.send(waiter, ErrorReply(InitError(
                    f"service {child.name!r} has failed: {child.last_error}").info()))
            elif child.status is S.STOPPED:
                self.send(waiter, ErrorReply(ServiceUnavailable(
                    f"service {child.name!r} has stopped: {child.last_error}").info()))
            else:
                self.send(waiter, child.info())

    def on_restart_service(self, msg: RestartService, sender: Any) -> None:
        """OTP's restart_child: a FAILED or STOPPED service starts again, its restart
        window afresh; answered once it is online (or has failed again)."""
        child = self.services.get(msg.name)
        if child is None:
            raise ServiceNotFound(f"no service named {msg.name!r}; configured: "
                                  f"{', '.join(sorted(self.services))}", {"service": msg.name})
        if self.shutting_down:
            raise ShuttingDown("the system is shutting down")
        if child.status not in (S.FAILED, S.STOPPED):
            raise Conflict(f"service {msg.name!r} is {child.status.value}: only a failed or "
                           "stopped service is restarted (its supervisor restarts a running "
                           "one when it fails)", {"service": msg.name, "status": child.status.value})
        child.restart.restart_by_request()
        child.waiters.append(sender)  # loads it at its start, and hears when it is up
        self._event(E.SERVICE_RESTARTED, child, f"restarted by request; it had "
                                                f"{child.status.value}: {child.last_error}")
        self._spawn(child)

    def on_list(self, msg: ListServices, sender: Any) -> None:
        self.send(sender, ServiceList(tuple(c.info() for c in self.services.values())))

    def on_info(self, msg: GetSystemInfo, sender: Any) -> None:
        if not self.ready:
            # A host re-joining a runtime that its launcher is starting again (it may
            # even have created this actor, by global name, before the launcher did).
            self.info_waiters.append(sender)
            return
        self.send(sender, self._system_info())

    def _system_info(self) -> SystemInfo:
        return SystemInfo(
            supervisor=self.myAddress, router=self.core[ROUTER].address,
            context=self.core[CONTEXT].address,
            services=tuple(c.info() for c in self.services.values()),
            default_task_timeout_s=self.config.system.default_task_timeout_s,
            routes=dict(self.config.routes), shutting_down=self.shutting_down,
            core=tuple(c.info() for c in self.core.values()),
            log_dir=str(self.config.log_dir()), pid=os.getpid(),
            admin_port=self.config.system.admin_port, last_apply=self.last_apply, incarnation=self.incarnation,
            admin_pid=os.getppid(),  # Thespian's admin is every top-level actor's parent
            members=self._members_info())

    # -- metrics --------------------------------------------------------------------------
    def on_get_metrics(self, msg: GetServiceMetrics, sender: Any) -> None:
        live = [c for c in self.services.values() if c.address is not None
                and (msg.name is None or c.name == msg.name)]
        if msg.name is not None and msg.name not in self.services:
            raise ServiceNotFound(f"no service named {msg.name!r}", {"service": msg.name})
        request_id = next(self.metrics_ids)
        self.metrics_requests[request_id] = {
            "waiter": sender, "missing": {c.name for c in live}, "found": {}}
        for child in live:
            self.send(child.address, GetMetrics())
        self.wakeupAfter(METRICS_WAIT_S, payload=("metrics", request_id))
        self._finish_metrics(request_id)

    def on_metrics(self, msg: ServiceMetrics, sender: Any) -> None:
        child = self._child_at(sender)
        if child is None:
            return
        with_restarts = ServiceMetrics(**{**msg.__dict__, "restarts": child.restart.total_restarts})
        for request_id, request in list(self.metrics_requests.items()):
            if child.name in request["missing"]:
                request["missing"].discard(child.name)
                request["found"][child.name] = with_restarts
                self._finish_metrics(request_id)

    def _finish_metrics(self, request_id: int, force: bool = False) -> None:
        request = self.metrics_requests.get(request_id)
        if request is not None and (force or not request["missing"]):
            del self.metrics_requests[request_id]
            found = request["found"]
            for name in request["missing"]:  # did not answer in time: report what we know
                found[name] = ServiceMetrics(name=name, restarts=self.services[name].restart.total_restarts)
            self.send(request["waiter"], MetricsReport(tuple(found[n] for n in sorted(found))))

    # -- timers ---------------------------------------------------------------------------
    def on_wakeup(self, msg: WakeupMessage, sender: Any) -> None:
        payload = msg.payload if isinstance(msg.payload, tuple) else ()
        if payload == ("heartbeat",):
            if not self.shutting_down:
                self._heartbeat_tick()
                self.wakeupAfter(self.config.health.heartbeat_interval_s, payload=("heartbeat",))
        elif payload[:1] == ("restart",):
            child, generation = payload[1], payload[2]
            if (child.address is None and child.status is not S.FAILED and not child.retiring
                    and child.generation == generation and not self.shutting_down):
                self._spawn(child)
        elif payload[:1] == ("stop-timeout",):
            self._stop_timed_out(payload[1], payload[2])
        elif payload[:1] in (("apply-timeout",), ("apply-moved",), ("apply-drain",)):
            self._rollout_timer(payload)
        elif payload[:1] == ("metrics",):
            self._finish_metrics(payload[1], force=True)
        elif payload == ("shutdown",):
            self._stopped()
        elif payload == ("ready-probe",) and self.starter is not None:
            self.send(self.core[ROUTER].address, GetRoutes())

    # -- shutdown ---------------------------------------------------------------------------
    def on_shutdown(self, msg: ShutdownSystem, sender: Any) -> None:
        if self.stopped:  # e.g. the launcher, told of a stop a host asked for
            self.send(sender, SystemStopped())
            return
        self.shutdown_waiters.append(sender)
        if self.shutting_down:
            return
        self.shutting_down = True
        if sender != self.launcher:  # the launcher knows of its own stop
            self._tell_launcher_stopping()
        self._rollout_shutdown()
        self.shutdown_drain_s = msg.drain_s
        self.log.info("system_stopping", drain_s=msg.drain_s)
        router = self.core[ROUTER]
        if router.address is not None:
            self.send(router.address, Drain(msg.drain_s, token=self.token))
        else:
            self.on_drained(DrainDone(token=self.token), None)
        # The last resort, should the router never answer: each service's own
        # shutdown budget has passed by then.
        budget = max((c.spec.shutdown_s for c in self.services.values()), default=0.0)
        self.wakeupAfter(msg.drain_s + budget + 1.0, payload=("shutdown",))

    def on_drained(self, msg: DrainDone, sender: Any) -> None:
        self._from_router(msg)
        if not self.shutting_down:
            return  # only the router's answer to our own Drain moves a shutdown on
        drain_s = max(0.1, self.shutdown_drain_s)
        for child in [*self.services.values(), *self.retiring]:
            if child.address is not None:
                child.status = S.STOPPING
                self.send(child.address, Shutdown(drain_s=drain_s, token=self.token))
                # OTP's shutdown budget: past it the child is killed, not waited for.
                self.wakeupAfter(drain_s + child.spec.shutdown_s,
                                 payload=("stop-timeout", child, child.generation))
        self._maybe_stopped()

    def _stop_timed_out(self, child: Child, generation: int) -> None:
        if child.retiring and child.status is S.STOPPING and child.generation == generation \
                and not self.shutting_down:
            self._child_down(child, f"did not stop within its shutdown budget "
                                    f"({child.spec.shutdown_s:g} s): killed", ErrorCode.TIMEOUT)
        elif child.status is S.STOPPING and child.generation == generation:
            self.log.warning("child_shutdown_timeout", child=child.name,
                             shutdown_s=child.spec.shutdown_s)
            self._end_process(child)
            child.status = S.OFFLINE
            self._maybe_stopped()

    def _maybe_stopped(self) -> None:
        if self.shutdown_waiters and all(
                c.status is not S.STOPPING for c in [*self.services.values(), *self.retiring]):
            self._stopped()

    def _stopped(self) -> None:
        if self.stopped or not self.shutdown_waiters:
            return
        self.stopped = True
        self.log.info("system_stopped")
        for waiter in self.shutdown_waiters:
            self.send(waiter, SystemStopped())
        self.shutdown_waiters.clear()

    def _from_router(self, msg: DrainDone | RoutesApplied) -> None:
        """The router's answers carry our token (as our orders to it do): anything else
        is refused, not silently dropped, so that a stray sender is not left waiting."""
        if msg.token != self.token:
            raise PermissionDenied(f"{type(msg).__name__} is taken from this runtime's "
                                   "router only")

    def on_error_reply(self, msg: ErrorReply, sender: Any) -> None:
        child = self._child_at(sender)
        self.log.warning("child_error_reply", child=child.name if child else None,
                         error=str(msg.error))

    def on_exit(self, msg: ActorExitRequest, sender: Any) -> None:
        if not self.shutting_down:
            self._tell_launcher_stopping()
        self.shutting_down = True
        if self.stopped:  # every child has stopped: nothing is left to wait for
            exit_within(EXIT_AFTER_STOP_S)

    # -- the launcher -------------------------------------------------------------------------
    def _tell_launcher_stopping(self) -> None:
        """So that the launcher does not take the end that follows for a crash to restart."""
        if self.launcher is not None:
            self.send(self.launcher, SystemStopping())

    def _launcher_gone(self) -> None:
        """Nobody is left to restart or stop this runtime (the launcher was killed;
        systemd starts a new one): end every process of it, this one last, so that
        the port is free for the new one."""
        self.log.error("launcher_gone_ending_runtime", launcher_pid=self.launcher_pid)
        for child in self._children():
            self._end_process(child)
        end_runtime()
