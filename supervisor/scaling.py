"""The supervisor's hands for autoscaling (the policy is ``autoscaling.py``).

On every heartbeat each replica reports its ongoing tasks; the sum goes to the
service's Autoscaler, and a decision it makes is carried out as a config apply
that changes only the service's ``replicas``: new replicas start staged and take
traffic once online; removed ones leave the route table first, drain their tasks,
then stop (rollout.py). One apply runs at a time, so while a person's apply (or
an earlier scaling) is in progress the autoscaler waits and decides again after;
a person's apply that comes during the autoscaler's waits for it.
Every decision is logged with its inputs, recorded as a ``service_scaled`` health
event (counted in ``grym_health_events_total{kind="service_scaled"}``).

A mixin of the Supervisor actor: it uses the actor's children, config and rollouts.
"""
from __future__ import annotations

import time
from typing import Any, Mapping

from messages.system import HealthEventKind
from messages.validation import is_int

from .autoscaling import Autoscaler, Decision
from .children import Child
from .config import SystemConfig, table_service_id
from .plan import plan as make_plan


class Scaling:
    def _init_scaling(self) -> None:
        self.autoscalers: dict[str, Autoscaler] = {}
        self.scaling: tuple[int, str] | None = None   # the apply in progress: (ref, service)

    def _scaling_now(self) -> bool:
        """Whether the apply in progress is the autoscaler's."""
        return self.scaling is not None and self.rollout is not None \
            and self.scaling[0] == self.rollout.ref

    def _replicas_of(self, sid: str) -> list[Child]:
        return [c for c in self.services.values() if c.spec.service.serves == sid]

    def _autoscale_tick(self) -> None:
        now = time.monotonic()
        for sid, spec in self.config.services.items():
            if spec.autoscaling is None or spec.replica_of is not None:
                continue
            scaler = self.autoscalers.get(sid)
            if scaler is None or scaler.config != spec.autoscaling:
                scaler = self.autoscalers[sid] = Autoscaler(sid, spec.autoscaling)
            scaler.observe(now, sum(c.ongoing for c in self._replicas_of(sid)
                                    if c.address is not None))
            if self.rollout is not None or self.shutting_down:
                continue  # decided again once the apply in progress is done
            decision = scaler.decide(now, spec.replicas)
            if decision is not None:
                self._scale(decision)
        for sid in set(self.autoscalers) - set(self.config.services):
            del self.autoscalers[sid]

    def _scale(self, decision: Decision) -> None:
        raw = _with_replicas(self.config.raw, decision.service, decision.desired)
        new = SystemConfig.from_dict(raw)
        spec = new.services[decision.service]
        drain_s = spec.task_timeout_s or new.system.default_task_timeout_s
        self.log.info("autoscaling_decision", service=decision.service, current=decision.current,
                      desired=decision.desired, ongoing=round(decision.ongoing, 2),
                      target=decision.target, waited_s=round(decision.waited_s, 2))
        self._event(HealthEventKind.SERVICE_SCALED, self.services[decision.service],
                    decision.reason())
        self._start_apply(new, make_plan(self.config, new), None, drain_s)
        self.scaling = (self.rollout.ref, decision.service)

    def _scaling_done(self, ref: int, ok: bool) -> None:
        """The autoscaler's apply ``ref`` ended (a person's: nothing to do)."""
        if self.scaling is None or self.scaling[0] != ref:
            return
        _, sid = self.scaling
        self.scaling = None
        scaler = self.autoscalers.get(sid)
        if scaler is None:
            return
        if ok:
            scaler.succeeded()
        else:
            hold = scaler.failed(time.monotonic())
            self.log.warning("autoscaling_held", service=sid, hold_s=round(hold, 1))

    def _keep_replicas(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """A person's apply that leaves ``replicas`` out of an autoscaled service keeps
        the count the autoscaler reached (within the new table's bounds)."""
        raw = dict(raw)
        for key, table in dict(raw.get("services") or {}).items():
            if not isinstance(table, Mapping) or "replicas" in table \
                    or not isinstance(table.get("autoscaling"), Mapping):
                continue
            sid = table_service_id(key, table)
            running = self.config.services.get(sid)
            low, high = (table["autoscaling"].get(k, 1) for k in ("min_replicas", "max_replicas"))
            if running is not None and running.autoscaling is not None \
                    and is_int(low) and is_int(high):  # else the new table's check says why
                raw = _with_replicas(raw, sid, min(max(running.replicas, low), high))
        return raw


def _with_replicas(raw: Mapping[str, Any], sid: str, replicas: int) -> dict[str, Any]:
    """``raw`` with service ``sid``'s table saying ``replicas``."""
    services = dict(raw.get("services") or {})
    for key, table in services.items():
        if isinstance(table, Mapping) and table_service_id(key, table) == sid:
            services[key] = {**table, "replicas": replicas}
    return {**raw, "services": services}
