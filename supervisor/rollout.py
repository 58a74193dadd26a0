"""The supervisor's half of applying a new configuration (``plan.py`` says what to do).

An apply runs in three phases, one apply at a time:

1. ``starting``: each new service, and a new generation of each replaced one,
   starts next to the running ones, *staged*: the router does not know it yet,
   so it takes no traffic. It must come online (loaded and warmed up; a lazy
   service: set up) within the new ``system.start_timeout_s``. If one fails or
   the time runs out, the apply is aborted: the staged children end, nothing
   else has changed, and the reason goes to the caller (INIT_ERROR), to the log,
   to a ``rollout_failed`` health event and to ``SystemInfo.last_apply``.
2. ``moving``: the new config becomes the running one, the in-place changes are
   made, and the router gets the whole new route table and the new services in
   one ``ApplyRoutes``. It answers once every task it had sent to a replaced or
   removed generation is answered: from then on nothing is sent to them (after a
   short grace for the hosts that route their own tasks).
3. ``draining``: the replaced and removed generations (now *retiring*) get a
   Shutdown, release their models and end; past their shutdown budget they are
   killed. Once the last one has ended the caller gets the ApplyReport.

A mixin of the Supervisor actor: it uses the actor's children, timers and router.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Mapping

from thespian.actors import ActorExitRequest

from messages.errors import Conflict, ErrorCode, GrymError, InitError, ShuttingDown
from messages.service import Initialize, ServiceStatus, Shutdown
from messages.system import (
    ApplyConfig, ApplyReport, ApplyRoutes, ConfigApplied, ErrorReply, HealthEventKind, RoutesApplied,
    split_service_id,
)

from .children import CONTEXT, Child, directory_entry, fetch_context, preload, service_child
from .config import SystemConfig
from .plan import Plan, plan as make_plan

S = ServiceStatus
ROUTER_ANSWER_MARGIN_S = 1.0  # past the drain time, the router's answer is not waited for
# Hosts that route their own tasks (host/direct.py) get the same ApplyRoutes and see
# it within their feed's poll (50 ms): the old generations keep taking work this long
# after the router has moved, so that a task a host sent them just before is served.
REPLICA_GRACE_S = 0.25


@dataclass
class Rollout:
    """One apply in progress."""

    ref: int
    config: SystemConfig            # the new one
    plan: Plan
    waiter: Any                     # who asked; gets the ApplyReport or the error (None: the autoscaler)
    drain_s: float
    staged: dict[str, Child]        # service id -> its new generation, not yet routed to
    phase: str = "starting"         # starting -> moving -> moved -> draining
    retiring: list[Child] = field(default_factory=list)  # replaced and removed generations


def is_ready(child: Child) -> bool:
    """Whether a staged child may take traffic: online (loaded and warmed up) when it
    is to be loaded, else set up and able to load on its first task."""
    if child.spec.service.eager or child.was_initialized:
        return child.status in (S.ONLINE, S.DEGRADED)
    return child.reported and child.status.accepts_tasks


class Rollouts:
    """Mixin for the Supervisor actor: ApplyConfig and what follows from it."""

    def _init_rollouts(self) -> None:
        self.rollout: Rollout | None = None
        self.retiring: list[Child] = []       # generations on their way out, by any apply
        self.generations: dict[str, int] = {}  # last generation per service id, every incarnation
        self.apply_refs = itertools.count(1)
        self.last_apply: str | None = None
        # A person's apply that came while the autoscaler's ran: it starts when that ends.
        self.queued_apply: tuple[ApplyConfig, Any] | None = None

    def _next_generation(self, name: str) -> int:
        """Generations are numbered per service id across the old and new incarnations
        of a rolling update, so the router can always tell them apart."""
        self.generations[name] = self.generations.get(name, 0) + 1
        return self.generations[name]

    def _resolve_service(self, name: str) -> Child | None:
        """A service by id, or by its bare name when exactly one version of it runs."""
        child = self.services.get(name)
        if child is None:
            versions = [c for sid, c in self.services.items() if split_service_id(sid)[0] == name
                        and c.spec.service.replica_of is None]
            child = versions[0] if len(versions) == 1 else None
        return child

    # -- 1. starting --------------------------------------------------------------------
    def on_apply(self, msg: ApplyConfig, sender: Any) -> None:
        if self.shutting_down:
            raise ShuttingDown("the system is shutting down")
        if self.rollout is not None:
            if self._scaling_now() and self.queued_apply is None:
                # The autoscaler's applies are short and not the person's doing: theirs
                # waits for it rather than fail (two people's applies still conflict).
                self.queued_apply = (msg, sender)
                self.log.info("apply_queued", behind=self.rollout.ref)
                return
            raise Conflict(f"another apply is in progress ({self.rollout.phase}); try again "
                           "when it is done")
        new = SystemConfig.from_dict(self._keep_replicas(self._with_running_system(msg.config)))
        plan = make_plan(self.config, new)         # so is a change that cannot be made running
        if msg.dry_run or plan.empty:
            self.send(sender, ApplyReport(plan.steps, applied=False, dry_run=msg.dry_run))
            return
        self._start_apply(new, plan, sender, msg.drain_s)

    def _start_apply(self, new: SystemConfig, plan: Plan, waiter: Any, drain_s: float) -> None:
        preload(new, plan.staged)
        staged = {}
        for sid in plan.staged:
            child = Child.of(service_child(new.services[sid]))
            old = self.services.get(sid)
            # A replacement of a service that was loaded is loaded (and warmed up) first.
            child.was_initialized = old is not None and (
                old.was_initialized or old.status in (S.ONLINE, S.DEGRADED))
            child.staged = True
            staged[sid] = child
        r = self.rollout = Rollout(next(self.apply_refs), new, plan, waiter, drain_s, staged)
        self.log.info("apply_started", ref=r.ref, steps=[s.line() for s in plan.steps])
        for child in staged.values():
            self._spawn(child, new)
        self.wakeupAfter(new.system.start_timeout_s, payload=("apply-timeout", r.ref))
        self._rollout_progress()

    def _rollout_progress(self) -> None:
        r = self.rollout
        if r is None:
            return
        if r.phase == "starting" and all(is_ready(c) for c in r.staged.values()):
            self._move_traffic(r)
        elif r.phase == "draining" and not any(c is x for c in r.retiring for x in self.retiring):
            self.rollout = None
            self.last_apply = f"applied: {'; '.join(s.line() for s in r.plan.steps)}"
            self.log.info("config_applied", ref=r.ref, steps=len(r.plan.steps))
            self._answer_apply(r, ApplyReport(r.plan.steps, applied=True))
            self._scaling_done(r.ref, ok=True)
            self._start_queued_apply()

    def _abort_rollout(self, reason: str, failed: Child | None = None,
                       error: type = InitError) -> None:
        """A staged child did not come up (or the system stops): end every staged child;
        the running config, routes and services were not touched."""
        r, self.rollout = self.rollout, None
        for child in r.staged.values():
            child.staged, child.retiring = False, True
            if child.address is not None:
                self._end_retiring(child, ActorExitRequest())
        self.last_apply = f"failed, nothing changed: {reason}"
        self.log.error("apply_failed", ref=r.ref, reason=reason)
        self._event(HealthEventKind.ROLLOUT_FAILED, failed or next(iter(r.staged.values())),
                    f"apply failed, the running services kept serving: {reason}", S.FAILED)
        self._answer_apply(r, ErrorReply(error(f"apply failed, nothing changed: {reason}").info()))
        self._scaling_done(r.ref, ok=False)
        self._start_queued_apply()

    def _start_queued_apply(self) -> None:
        """The apply that waited for the autoscaler's, now that it ended (a refusal,
        SHUTTING_DOWN included, is its answer)."""
        if self.queued_apply is None or self.rollout is not None:
            return
        (msg, sender), self.queued_apply = self.queued_apply, None
        try:
            self.on_apply(msg, sender)
        except GrymError as exc:
            self.send(sender, ErrorReply(exc.info()))

    def _answer_apply(self, r: Rollout, msg: Any) -> None:
        if r.waiter is not None:
            self.send(r.waiter, msg)

    def _with_running_system(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """``raw`` with the running ``[system]`` keys it leaves out (the admin port a
        runtime picked, say): they cannot change while it runs, so leaving them out
        keeps them. A ConfigError from what follows is answered: nothing changed."""
        raw = dict(raw)
        if isinstance(raw.get("system", {}), Mapping):
            raw["system"] = {**self.config.raw.get("system", {}), **raw.get("system", {})}
        return raw

    # -- 2. moving ----------------------------------------------------------------------
    def _move_traffic(self, r: Rollout) -> None:
        plan, new = r.plan, r.config
        self.config = new
        for sid in plan.stop:
            r.retiring.append(self.services.pop(sid))
        for sid, child in r.staged.items():
            child.staged = False
            old = self.services.get(sid)
            if old is not None:
                r.retiring.append(old)
                child.waiters, old.waiters = child.waiters + old.waiters, []
            self.services[sid] = child
        for sid, _ in plan.update:
            child, spec = self.services[sid], new.services[sid]
            child.spec = service_child(spec)
            child.restart.settings = spec.restart
            if spec.eager and child.status is S.OFFLINE and child.address is not None:
                self.send(child.address, Initialize())
        if plan.changed("health"):
            for child in self._children():
                if child.health is not None:
                    child.health.settings = new.health
        for child in r.retiring:
            child.retiring = True
        self.retiring += r.retiring
        r.phase = "moving"
        self._tell_router(ApplyRoutes(
            routes=dict(new.routes), fetch_context=fetch_context(new),
            default_timeout_s=new.system.default_task_timeout_s,
            directory=tuple(directory_entry(c, self.token) for c in r.staged.values()),
            removed=plan.stop, drain_s=r.drain_s, ref=r.ref, token=self.token))
        for child in r.staged.values():
            if child.status in (S.ONLINE, S.DEGRADED):
                self._answer_waiters(child)
        if plan.context:
            self._restart_core(CONTEXT, "its settings changed (config apply)")
        if self.launcher is not None:  # a restart of the whole runtime starts this config
            self.send(self.launcher, ConfigApplied(dict(new.raw)))
        self.log.info("apply_traffic_moved", ref=r.ref, retiring=[c.name for c in r.retiring])
        self.wakeupAfter(r.drain_s + ROUTER_ANSWER_MARGIN_S, payload=("apply-moved", r.ref))

    def on_routes_applied(self, msg: RoutesApplied, sender: Any) -> None:
        self._from_router(msg)
        r = self.rollout
        if r is None or r.ref != msg.ref or r.phase != "moving":
            return  # a late answer to an apply that has moved on
        if msg.answered_with_timeout:
            self.log.warning("apply_drain_incomplete", ref=r.ref,
                             unanswered=msg.answered_with_timeout)
        r.phase = "moved"
        self.wakeupAfter(REPLICA_GRACE_S, payload=("apply-drain", r.ref))

    def _restart_core(self, name: str, why: str) -> None:
        """End a core child normally: its restart (permanent) sets it up from the new config."""
        child = self.core[name]
        if child.address is not None:
            child.ending = why
            self.send(child.address, ActorExitRequest())

    # -- 3. draining ----------------------------------------------------------------------
    def _drain_retiring(self, r: Rollout) -> None:
        r.phase = "draining"
        for child in list(r.retiring):
            if child.address is None:  # down or failed: nothing to drain
                self._retired(child)
            else:
                self._end_retiring(child, Shutdown(drain_s=r.drain_s, token=self.token,
                                                   retiring=True), r.drain_s)
        self._rollout_progress()

    def _end_retiring(self, child: Child, msg: Any, drain_s: float = 0.0) -> None:
        """Ask a retiring child to end (Shutdown: drain first); past its budget it is killed."""
        if not any(c is child for c in self.retiring):
            self.retiring.append(child)
        child.status = S.STOPPING
        self.send(child.address, msg)
        self.wakeupAfter(drain_s + child.spec.shutdown_s,
                         payload=("stop-timeout", child, child.generation))

    def _retiring_status(self, child: Child, status: ServiceStatus, pid: int) -> None:
        """A retiring child reports: once it has released its model, it is ended."""
        child.pid = pid
        if self.shutting_down:  # it stops with the rest (Supervisor.on_drained)
            child.status = status
            self._maybe_stopped()
        elif child.status is not S.STOPPING:
            child.status = status
        elif status in (S.OFFLINE, S.STOPPED) and child.address is not None:
            child.ending = "replaced or removed by a config apply"
            self.send(child.address, ActorExitRequest())

    def _retired(self, child: Child, reason: str | None = None,
                 code: ErrorCode = ErrorCode.SHUTTING_DOWN) -> None:
        """A retiring child has ended: the router settles whatever it still had."""
        if not any(c is child for c in self.retiring):
            return
        self.retiring = [c for c in self.retiring if c is not child]
        child.status = S.STOPPED
        child.last_error = "replaced or removed by a config apply"
        if reason is not None:
            self._announce(child, (reason, code))
        self._answer_waiters(child)
        self.log.info("child_retired", child=child.name, generation=child.generation)
        self._rollout_progress()

    # -- the actor's events, as they concern an apply ---------------------------------------
    def _rollout_child_down(self, child: Child, reason: str, code: ErrorCode) -> bool:
        """A staged or retiring child is gone: abort the apply, or count it retired.
        False for any other child (the restart policy decides)."""
        if child.staged:
            child.status = S.FAILED
            self._abort_rollout(f"{child.name}: {reason}", child)
            return True
        if child.retiring:
            self._retired(child, reason, code)
            return True
        return False

    def _rollout_timer(self, payload: tuple) -> None:
        r = self.rollout
        if r is None or payload[1] != r.ref:
            return
        if payload[0] == "apply-timeout" and r.phase == "starting":
            waiting = [c for c in r.staged.values() if not is_ready(c)]
            self._abort_rollout(
                f"{', '.join(f'{c.name} ({c.status.value})' for c in waiting)} not online within "
                f"system.start_timeout_s = {r.config.system.start_timeout_s:g} s",
                waiting[0] if waiting else None)
        elif payload[0] == "apply-moved" and r.phase == "moving":
            self.log.warning("apply_router_silent", ref=r.ref)  # restarted meanwhile, say
            self._drain_retiring(r)
        elif payload[0] == "apply-drain" and r.phase == "moved":
            self._drain_retiring(r)

    def _rollout_shutdown(self) -> None:
        """The system stops: an apply still starting is aborted; one further on was
        made already, and its retiring children stop with everything else."""
        r = self.rollout
        if r is None:
            return
        if r.phase == "starting":
            self._abort_rollout("the system is shutting down", error=ShuttingDown)
        else:
            self.rollout = None
            self._answer_apply(r, ErrorReply(ShuttingDown(
                "the system is shutting down; the apply was made, its old services stop "
                "with the rest").info()))
            self._start_queued_apply()
