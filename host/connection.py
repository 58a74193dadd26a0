"""How a host handle follows its runtime: which start of it (incarnation) it talks
to, noticing that it went away, and re-joining the new one by itself.

A ``Connection`` is CONNECTED, REJOINING or CLOSED. A watcher thread per handle
keeps a health subscription (the supervisor's events say when a core actor or a
service was restarted: the handle then fetches the new addresses) and looks at
the supervisor's and the admin's processes every ``WATCH_S`` (a runtime on
another machine, whose processes cannot be seen, is asked for its SystemInfo
every ``PROBE_S`` instead). When one is gone the connection's epoch moves on:
calls waiting for an answer look every ``SLICE_S`` and end at once with a
retryable SERVICE_UNAVAILABLE, new calls wait for the re-join (within their own
timeout; gRPC's wait-for-ready), and each thread's endpoint is renewed.

Re-joining creates nothing that the launcher would not: the handle never builds a
new ``ActorSystem`` (one built while no admin listens starts an admin in the
host's own process); it asks through an endpoint of the one it has, once the old
admin has ended and a new one listens. Looking the supervisor up by its global
name may create it before the launcher does; the launcher then finds that one
and starts it, and the supervisor answers GetSystemInfo once it is ready.
"""
from __future__ import annotations

import enum
import ipaddress
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

import psutil

from messages.errors import GrymError, ServiceUnavailable, retryable
from messages.service import ServiceStatus
from messages.system import (
    SUPERVISOR_CLASS, SUPERVISOR_GLOBAL_NAME, GetSystemInfo, HealthEvent, HealthEventKind,
    Subscribed, SubscribeHealth, SystemInfo, UnsubscribeHealth,
)
from runtime.logs import host_logger

from .background import Background
from .launcher import alive, port_in_use
from .retry import ClientMetrics

if TYPE_CHECKING:
    from .system import ServiceSystem

log = host_logger()
SLICE_S = 0.1          # a call waiting for an answer looks this often whether its runtime went away
WATCH_S = 0.1          # the watcher's look at the supervisor's and the admin's processes
PROBE_S = 1.0          # a runtime on another machine is asked for its SystemInfo this often
PROBE_MISSES = 2       # unanswered probes in a row: gone
REJOIN_POLL_S = 0.05   # between re-join attempts
REJOIN_ASK_S = 0.5     # a supervisor answers GetSystemInfo once its runtime is ready: looks this often
REJOIN_WAIT_S = 120.0  # ... for at most this long (eager models may take long to load)
SUBSCRIBE_S = 2.0
# Events after which addresses may have changed (a restarted core actor or service).
_MOVES = (HealthEventKind.SERVICE_RESTARTED, HealthEventKind.SERVICE_UNHEALTHY,
          HealthEventKind.SERVICE_FAILED, HealthEventKind.SERVICE_STOPPED)


class State(str, enum.Enum):
    CONNECTED = "connected"
    REJOINING = "rejoining"
    CLOSED = "closed"


class Connection:
    """The incarnation a handle talks to, and the wait for a new one."""

    def __init__(self, asys: Any, info: SystemInfo, address: str, port: int,
                 launcher: Any, metrics: ClientMetrics):
        self.asys = asys
        self.info = info
        self.address, self.port = address, port
        self.launcher = launcher            # a Popen for a runtime this host started, else None
        self.metrics = metrics
        self.epoch = 0                      # moves on when the runtime is lost
        self.state = State.CONNECTED
        self.reason = ""                    # why it is not connected now
        self.lost_reason = ""               # why it was last lost
        self.lost_at: float | None = None
        self.local = _can_watch_processes(address, info)
        self._cond = threading.Condition()

    # -- what calls use --------------------------------------------------------------
    def wait_connected(self, deadline: float, what: str = "the call") -> tuple[int, SystemInfo]:
        """(epoch, SystemInfo) once connected; a typed error at ``deadline`` or when closed."""
        with self._cond:
            while self.state is State.REJOINING:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise retryable(f"{what}: the runtime went away ({self.reason}) and is not "
                                    "back yet", {"state": self.state.value})
                self._cond.wait(remaining)
            if self.state is State.CLOSED:
                raise ServiceUnavailable(f"{what}: {self.reason}", {"state": self.state.value})
            return self.epoch, self.info

    def gone_since(self, epoch: int, address: Any, sent_to: str | None) -> str | None:
        """Why a call sent in ``epoch`` to ``address`` (the ``sent_to`` actor of the
        runtime) will not be answered, or None while it may be."""
        if self.state is State.CLOSED:
            return self.reason
        if self.epoch != epoch:
            return f"the runtime went away ({self.lost_reason})"
        if sent_to is not None and role_of(self.info, address) != sent_to:
            return f"{sent_to} was restarted"
        return None

    def update(self, info: SystemInfo) -> None:
        """Newer addresses of the same incarnation (a stale answer is ignored)."""
        with self._cond:
            if self.state is State.CONNECTED and info.incarnation == self.info.incarnation:
                self.info = info

    # -- what the watcher does ----------------------------------------------------------
    def lose(self, reason: str) -> None:
        with self._cond:
            if self.state is not State.CONNECTED:
                return
            self.state, self.reason = State.REJOINING, reason
            self.lost_reason = reason
            self.epoch += 1
            self.lost_at = time.monotonic()
            self._cond.notify_all()
        log.warning("runtime_lost", reason=reason, admin_port=self.port)

    def rejoined(self, info: SystemInfo) -> None:
        with self._cond:
            if self.state is not State.REJOINING:
                return
            self.info, self.state, self.reason = info, State.CONNECTED, ""
            outage = time.monotonic() - (self.lost_at or time.monotonic())
            with self.metrics.lock:
                self.metrics.rejoins += 1
                self.metrics.last_outage_s = outage
            self._cond.notify_all()
        log.info("runtime_rejoined", incarnation=info.incarnation, outage_s=round(outage, 3))

    def close(self, reason: str) -> None:
        with self._cond:
            if self.state is State.CLOSED:
                return
            self.state, self.reason = State.CLOSED, reason
            self.epoch += 1
            self._cond.notify_all()

    def launcher_exit(self) -> str | None:
        """Why the runtime cannot come back: the launcher this host started has exited."""
        code = self.launcher.poll() if self.launcher is not None else None
        return None if code is None else \
            f"the runtime's launcher has exited (status {code}); start a new runtime"


class Watcher(Background):
    """The handle's thread: health events in, loss noticed, re-joins made."""

    def __init__(self, system: "ServiceSystem"):
        self._system = weakref.ref(system)  # a handle nobody holds can still be collected
        self._conn = system._conn
        self.subscribed = threading.Event()  # the first health subscription is in place
        self._probe_misses, self._next_probe = 0, 0.0  # a runtime on another machine
        self._start("grym-watcher")

    def _run(self) -> None:
        incarnation, since = self._conn.info.incarnation, None
        while not self._stop.is_set():
            if self._conn.state is State.CLOSED:
                return
            if self._conn.state is State.REJOINING:
                self._rejoin_once()
                continue
            info = self._conn.info
            if info.incarnation != incarnation:
                # A new start of the runtime: its events count from 1 again; say
                # that what came between may be missing, and read all of its own.
                self._deliver(_restarted_marker(incarnation, info))
                incarnation, since = info.incarnation, 0
            since = self._watch(info, since)

    def _watch(self, info: SystemInfo, since: int | None) -> int | None:
        """Follow one incarnation until it is lost (or the handle closes); the last
        health sequence number seen, for a subscription made again."""
        conn, epoch = self._conn, self._conn.epoch
        try:
            with conn.asys.private() as endpoint:
                try:
                    reply = endpoint.ask(info.supervisor, SubscribeHealth(since=since),
                                         SUBSCRIBE_S)
                    if not isinstance(reply, Subscribed):
                        self._check(info, force_probe=True)  # gone, or slow: come back
                        return since
                    since = reply.last_seq if since is None else since
                    self.subscribed.set()
                    return self._follow(endpoint, epoch, since)
                finally:
                    if conn.state is State.CONNECTED and conn.epoch == epoch:
                        # Leaving a live supervisor (closing, or subscribing again):
                        # it must not keep sending to an endpoint nobody reads.
                        endpoint.tell(conn.info.supervisor, UnsubscribeHealth())
        except Exception as exc:  # noqa: BLE001 - a transport in a bad way: look again
            log.debug("watcher_error", error=f"{type(exc).__name__}: {exc}")
            self._check(conn.info, force_probe=True)
            self._stop.wait(WATCH_S)
        return since

    def _follow(self, endpoint: Any, epoch: int, since: int) -> int:
        conn = self._conn
        next_check = time.monotonic()
        while not self._stop.is_set() and conn.epoch == epoch:
            msg = endpoint.listen(WATCH_S)
            if isinstance(msg, HealthEvent) and msg.seq > since:
                since = msg.seq
                if msg.kind in _MOVES:
                    self._refresh()
                self._deliver(msg)
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + WATCH_S
                if not self._check(conn.info):
                    break
                if conn.info.router is None or conn.info.context is None:
                    self._refresh()  # a core actor is between two generations
        return since

    # -- noticing -------------------------------------------------------------------------
    def _check(self, info: SystemInfo, force_probe: bool = False) -> bool:
        """True while the runtime of ``info`` is there; else marks the connection lost."""
        conn = self._conn
        if self._closed_for_good():
            return False
        if conn.local:
            if not alive(info.pid):
                conn.lose(f"its supervisor (pid {info.pid}) ended")
                return False
            if info.admin_pid is not None and not alive(info.admin_pid):
                conn.lose(f"its admin (pid {info.admin_pid}) ended")
                return False
            return True
        now = time.monotonic()
        if not force_probe and now < self._next_probe:
            return True
        self._next_probe = now + PROBE_S
        system = self._system()
        try:
            latest = system.ask(info.supervisor, GetSystemInfo(), PROBE_S) if system else None
        except GrymError:
            latest = None
        if isinstance(latest, SystemInfo) and latest.incarnation == info.incarnation:
            self._probe_misses = 0
            conn.update(latest)
            return True
        self._probe_misses += 1
        if self._probe_misses >= PROBE_MISSES or isinstance(latest, SystemInfo):
            self._probe_misses = 0
            conn.lose("its supervisor does not answer")
            return False
        return True

    def _refresh(self) -> None:
        system = self._system()
        if system is not None:
            try:
                system.refresh(timeout=1.0)
            except GrymError:
                pass  # the checks decide whether the runtime is gone

    # -- re-joining -------------------------------------------------------------------------
    def _rejoin_once(self) -> None:
        """Wait until a new admin listens, then ask it for the supervisor and for its
        SystemInfo (answered once that runtime is ready), on one endpoint."""
        conn, old = self._conn, self._conn.info
        if self._closed_for_good():
            return
        # The old admin must be gone first: looking the supervisor up in an admin that
        # the launcher is taking down would start a stray one there.
        if (conn.local and old.admin_pid is not None and alive(old.admin_pid)) \
                or not port_in_use(conn.address, conn.port):
            self._stop.wait(REJOIN_POLL_S)
            return
        try:
            with conn.asys.private() as endpoint:
                supervisor = endpoint.createActor(SUPERVISOR_CLASS, globalName=SUPERVISOR_GLOBAL_NAME)
                reply = endpoint.ask(supervisor, GetSystemInfo(), REJOIN_ASK_S)
                deadline = time.monotonic() + REJOIN_WAIT_S
                while not isinstance(reply, SystemInfo) and time.monotonic() < deadline \
                        and not self._stop.is_set() and not self._closed_for_good() \
                        and port_in_use(conn.address, conn.port):
                    reply = endpoint.listen(REJOIN_ASK_S)  # still starting: its answer comes
        except Exception as exc:  # noqa: BLE001 - not up yet, or going down again
            log.debug("rejoin_attempt_failed", error=f"{type(exc).__name__}: {exc}")
            reply = None
        if isinstance(reply, SystemInfo) and not (conn.local and reply.incarnation == old.incarnation):
            conn.local = _can_watch_processes(conn.address, reply)
            conn.rejoined(reply)
        else:
            self._stop.wait(REJOIN_POLL_S)

    def _closed_for_good(self) -> bool:
        why = self._conn.launcher_exit()
        if why:
            self._conn.close(why)
        return self._conn.state is State.CLOSED

    def _deliver(self, event: HealthEvent) -> None:
        system = self._system()
        if system is not None:
            system.health._deliver(event)


def _restarted_marker(old: str, info: SystemInfo) -> HealthEvent:
    return HealthEvent(seq=0, kind=HealthEventKind.RUNTIME_RESTARTED, service="runtime",
                       status=ServiceStatus.ONLINE, at=time.time(),
                       reason=f"the runtime was restarted (start {old} -> {info.incarnation}); "
                              "its event log starts afresh: events of the previous start after "
                              "the last one delivered may be missing")


def role_of(info: SystemInfo, address: Any) -> str | None:
    """Which of the runtime's actors ``address`` is, as ``info`` knows them."""
    if address is None:
        return None
    if address == info.supervisor:
        return "the supervisor"
    if address == info.router:
        return "the router"
    if address == info.context:
        return "the context actor"
    for service in info.services:
        if getattr(service, "address", None) is not None and address == service.address:
            return f"service {service.name!r}"
    return None


def _can_watch_processes(address: str, info: SystemInfo) -> bool:
    """Whether the supervisor's process is this machine's to look at."""
    try:
        loopback = address == "localhost" or ipaddress.ip_address(address).is_loopback
    except ValueError:
        loopback = False
    return loopback and info.pid is not None and psutil.pid_exists(info.pid)
