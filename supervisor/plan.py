"""What applying a new configuration to a running system means: the difference
between the running SystemConfig and the new one, as a plan. Pure functions,
no actor.

A change the running system cannot take is refused here, with the key named
(a ConfigError), before anything is touched: the whole config is applied, or
none of it. What the plan says, in the order the supervisor carries it out:

- ``start``: a new service id. ``replace``: a service whose model, settings or
  runtime keys changed: a rolling update (a new generation starts next to the
  old one and warms up; traffic moves; the old one drains and stops). Changing
  ``version`` changes the id, so it is a ``start`` of the new id and a ``stop``
  of the old one, with the routes moving from one to the other in between.
- ``update``: a service's keys that apply to the running process (restart
  policy, ``eager``, ``fetch_context``).
- ``route``: task types whose route changes; the router gets the whole new
  table in one message, once every new service is online.
- ``stop``: removed services drain, then stop.
- ``set``: ``[health]`` keys and some ``[system]`` keys, applied in place.
- ``restart``: ``[context]`` changes, applied by restarting the context actor on
  the same SQLite store (refused for an in-memory store, which would lose its items).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from context.settings import ContextSettings
from messages.errors import ConfigError
from messages.system import PlanStep, route_targets

from .config import ServiceSpec, SystemConfig

# [system] keys the supervisor and router can take while running; the others
# (ports, addresses, start method, key, log directory) were used to start it.
IN_PLACE_SYSTEM_KEYS = frozenset({"default_task_timeout_s", "start_timeout_s"})
# Service keys applied to the running service; any other change replaces it.
IN_PLACE_SERVICE_KEYS = frozenset({"restart", "eager", "fetch_context", "replicas",
                                   "autoscaling", "shutdown_s"})
# Said once, on the service's first replica; the others start or stop.
REPLICA_COUNT_KEYS = frozenset({"replicas", "autoscaling"})
# Set up by the launcher when the runtime started.
LAUNCHER_SECTIONS = ("metrics", "http", "logging")


@dataclass(frozen=True)
class Change:
    key: str      # dotted, as in the config file
    old: Any
    new: Any

    def describe(self) -> str:
        return f"{self.key.rpartition('.')[2]} {_show(self.old)} -> {_show(self.new)}"


@dataclass(frozen=True)
class Plan:
    start: tuple[str, ...] = ()
    replace: tuple[tuple[str, tuple[Change, ...]], ...] = ()
    update: tuple[tuple[str, tuple[Change, ...]], ...] = ()
    stop: tuple[str, ...] = ()
    routes: tuple[Change, ...] = ()
    settings: tuple[Change, ...] = ()
    context: tuple[Change, ...] = ()   # applied by restarting the context actor
    steps: tuple[PlanStep, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.steps

    @property
    def staged(self) -> tuple[str, ...]:
        """The service ids whose new generation must be online before traffic moves."""
        return self.start + tuple(sid for sid, _ in self.replace)

    def changed(self, section: str) -> bool:
        return any(c.key.startswith(f"{section}.") for c in self.settings)


def plan(old: SystemConfig, new: SystemConfig) -> Plan:
    """The plan that turns the running ``old`` into ``new``; ConfigError names the
    first key that cannot change while the runtime runs."""
    _refuse_fixed(old, new)
    settings = tuple(c for c in _changes("system", old.system, new.system)
                     if _leaf(c.key) in IN_PLACE_SYSTEM_KEYS) \
        + tuple(_changes("health", old.health, new.health))
    context = _context_changes(old, new)
    start = tuple(sid for sid in new.services if sid not in old.services)
    stop = tuple(sid for sid in old.services if sid not in new.services)
    replace, update = [], []
    for sid in new.services:
        if sid not in old.services:
            continue
        changes = _service_changes(sid, old.services[sid], new.services[sid])
        if new.services[sid].replica_of is not None:
            changes = tuple(c for c in changes if _root(sid, c.key) not in REPLICA_COUNT_KEYS)
        if any(_root(sid, c.key) not in IN_PLACE_SERVICE_KEYS for c in changes):
            replace.append((sid, changes))
        elif changes:
            update.append((sid, changes))
    routes = tuple(Change(f"routes.{t}", old.routes.get(t), new.routes.get(t))
                   for t in sorted({*old.routes, *new.routes})
                   if old.routes.get(t) != new.routes.get(t))
    steps = (
        *(PlanStep("start", sid, f"{_what(new.services[sid])}; online (and warmed up) before "
                                 "traffic moves") for sid in start),
        *(PlanStep("replace", sid, "rolling: " + ", ".join(c.describe() for c in changes))
          for sid, changes in replace),
        *(PlanStep("update", sid, "in place: " + ", ".join(c.describe() for c in changes))
          for sid, changes in update),
        *(PlanStep("route", c.key.partition(".")[2], f"{_show_route(c.old)} -> "
                                                     f"{_show_route(c.new)}") for c in routes),
        *(PlanStep("stop", sid, "drains its tasks, then stops") for sid in stop),
        *(PlanStep("set", c.key, f"{_show(c.old)} -> {_show(c.new)}") for c in settings),
        *([PlanStep("restart", "context", "on the same store, with " + ", ".join(
            c.describe() for c in context))] if context else []),
    )
    return Plan(start=start, replace=tuple(replace), update=tuple(update), stop=stop,
                routes=routes, settings=settings, context=context, steps=steps)


def _what(spec: ServiceSpec) -> str:
    return spec.kind if spec.replica_of is None else f"a replica of {spec.replica_of}"


def _refuse_fixed(old: SystemConfig, new: SystemConfig) -> None:
    for change in _changes("system", old.system, new.system):
        if _leaf(change.key) not in IN_PLACE_SYSTEM_KEYS:
            _refuse(change, "the runtime was started with it; stop and start the runtime "
                            "to change it")
    for section in LAUNCHER_SECTIONS:
        for change in _changes(section, getattr(old, section), getattr(new, section)):
            _refuse(change, "the launcher set it up when the runtime started; stop and start "
                            "the runtime to change it")


def _context_changes(old: SystemConfig, new: SystemConfig) -> tuple[Change, ...]:
    was, will = ContextSettings.from_config(old.context), ContextSettings.from_config(new.context)
    changes = tuple(_changes("context", was, will))
    for change in changes:
        if _leaf(change.key) in ("persistence", "path"):
            _refuse(change, "the context store cannot move while the runtime runs")
        if was.persistence == "memory":
            _refuse(change, "applying it restarts the context actor, and its store is in "
                            "memory: every item would be lost (use persistence = \"sqlite\", "
                            "or stop and start the runtime)")
    return changes


def _service_changes(sid: str, old: ServiceSpec, new: ServiceSpec) -> tuple[Change, ...]:
    where = f"services.{sid}"
    if old.kind != new.kind:
        return (Change(f"{where}.kind", old.kind, new.kind),)
    out = [*_changes(where, old.settings, new.settings),
           *_changes(f"{where}.restart", old.restart, new.restart)]
    for f in dataclasses.fields(ServiceSpec):
        if f.name not in ("name", "kind", "settings", "restart", "version"):
            a, b = getattr(old, f.name), getattr(new, f.name)
            if a != b:
                out.append(Change(f"{where}.{f.name}", a, b))
    return tuple(out)


def _root(sid: str, key: str) -> str:
    """The ServiceSpec field a change of service ``sid`` belongs to (a setting's: settings)."""
    rest = key[len(f"services.{sid}."):]
    head = rest.partition(".")[0]
    return head if head in {f.name for f in dataclasses.fields(ServiceSpec)} else "settings"


def _changes(prefix: str, old: Any, new: Any) -> list[Change]:
    """The fields of two dataclasses that differ, as dotted keys under ``prefix``."""
    if old == new:
        return []
    if type(old) is not type(new) or not dataclasses.is_dataclass(old):
        return [Change(prefix, old, new)]
    return [Change(f"{prefix}.{f.name}", getattr(old, f.name), getattr(new, f.name))
            for f in dataclasses.fields(old) if getattr(old, f.name) != getattr(new, f.name)]


def _refuse(change: Change, why: str) -> None:
    raise ConfigError(f"{change.key}: cannot change from {_show(change.old)} to "
                      f"{_show(change.new)} while the runtime runs: {why}", {"key": change.key})


def _leaf(key: str) -> str:
    return key.rpartition(".")[2]


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _show_route(route: Any) -> str:
    if route is None:
        return "(none)"
    if isinstance(route, str):
        return route
    return ", ".join(f"{sid} {weight}" for sid, weight in route_targets(route).items())
