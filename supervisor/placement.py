"""Where services run: the convention's actor systems, whether each still answers, and
the choice of one for a service with requirements. A plain class: the supervisor
feeds it Thespian's convention notices and the answers to its pings, and asks it.

The leader's own actor system is always a member (``local``). Others join the
leader's convention (``run.py join``); Thespian tells the supervisor when one
registers or leaves (``ActorSystemConventionUpdate``), but notices a member
that died only after three missed re-registrations (22 minutes by default), so
the supervisor pings each member's admin on its heartbeat (Thespian's
``QueryExists``, answered by the admin with ``QueryAck``), as OTP's net kernel
ticks its nodes. A member that misses as many pings in a row as a child may
miss heartbeats is lost: its services are placed again elsewhere; it keeps
being pinged, more slowly, and is used again once it answers. One ping at a
time: Thespian keeps an unanswered send pending (retried, for minutes), and
every other send of the supervisor waits once 20 are (its
MAX_PENDING_TRANSMITS), so a member that does not answer must not collect them.

A service is placed on an answering member whose capabilities meet its
requirements (runtime.capabilities.meets), the one running the fewest
services; the leader wins a tie. None meets them: ``ServiceUnavailable``
naming, for each member, why not.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from messages.errors import ServiceUnavailable
from messages.system import MemberInfo
from runtime.capabilities import ADDRESS, MEMBER, meets, shown

DOWN_PING_EVERY = 40  # ticks between pings of a lost member (10 s at the default heartbeat)


@dataclass
class Member:
    name: str
    address: Any                   # its admin's Thespian address; None for the leader's own
    capabilities: Mapping[str, Any]
    missed: int = 0                # ticks since its last answer
    up: bool = True
    waiting: bool = False          # a ping is out, unanswered
    ticks_down: int = 0

    @property
    def local(self) -> bool:
        return self.address is None

    def info(self, services: tuple[str, ...]) -> MemberInfo:
        return MemberInfo(name=self.name, address=self.capabilities.get(ADDRESS),
                          local=self.local, up=self.up, capabilities=dict(self.capabilities),
                          services=services)


@dataclass
class Convention:
    local: Member
    missed_limit: int
    remote: list[Member] = field(default_factory=list)  # Thespian addresses are unhashable

    @classmethod
    def of(cls, local_capabilities: Mapping[str, Any], missed_limit: int) -> "Convention":
        name = str(local_capabilities.get(MEMBER) or "leader")
        return cls(Member(name, None, dict(local_capabilities)), missed_limit)

    def members(self) -> list[Member]:
        return [self.local, *self.remote]

    def named(self, name: str) -> Member | None:
        return next((m for m in self.members() if m.name == name), None)

    def at(self, address: Any) -> Member | None:
        return next((m for m in self.remote if m.address == address), None)

    # -- what Thespian and the pings tell ----------------------------------------------
    def joined(self, address: Any, capabilities: Mapping[str, Any]) -> Member:
        """A member registered (or registered again, as after its restart). Raises
        ServiceUnavailable when it cannot be told apart from another one."""
        name = capabilities.get(MEMBER)
        if not isinstance(name, str) or not name:
            raise ServiceUnavailable(f"the actor system at {address} joined without a "
                                     f"{MEMBER!r} name: not started by run.py join")
        known, same_name = self.at(address), self.named(name)
        if same_name is not None and same_name is not known:
            if same_name.up:
                raise ServiceUnavailable(f"a member named {name!r} is already in the "
                                         f"convention (at {same_name.capabilities.get(ADDRESS)})")
            self.remote.remove(same_name)  # a lost member back on another address
        if known is None:
            known = Member(name, address, dict(capabilities))
            self.remote.append(known)
        known.name, known.capabilities = name, dict(capabilities)
        known.missed, known.up, known.waiting = 0, True, False
        return known

    def left(self, address: Any) -> Member | None:
        member = self.at(address)
        if member is not None:
            self.remote.remove(member)
        return member

    def tick(self) -> tuple[list[Member], list[Member]]:
        """One heartbeat: (the members to ping now, the members lost just now)."""
        ping, lost = [], []
        for member in self.remote:
            if member.up:
                member.missed += 1
                if member.missed > self.missed_limit:
                    member.up, member.ticks_down = False, 0
                    lost.append(member)
                elif not member.waiting:
                    member.waiting = True
                    ping.append(member)
            else:
                member.ticks_down += 1
                if member.ticks_down % DOWN_PING_EVERY == 0:
                    ping.append(member)
        return ping, lost

    def answered(self, address: Any) -> Member | None:
        """A member answered a ping; returns it if it was lost and is back."""
        member = self.at(address)
        if member is None:
            return None
        member.missed, member.waiting = 0, False
        if member.up:
            return None
        member.up = True
        return member

    # -- placement --------------------------------------------------------------------
    def place(self, requirements: Mapping[str, Any], load: Mapping[str, int]) -> Member:
        """The member to start a service with ``requirements`` on (``load``: services
        per member name)."""
        fits, why_not = [], []
        for member in self.members():
            reason = "not answering" if not member.up else meets(member.capabilities, requirements)
            if reason is None:
                fits.append(member)
            else:
                why_not.append(f"{member.name}: {reason}")
        if not fits:
            wanted = ", ".join(f"{k} = {shown(v)}" for k, v in requirements.items())
            raise ServiceUnavailable(f"no member of the convention meets requires {{{wanted}}} "
                                     f"({'; '.join(why_not)})",
                                     {"requires": dict(requirements), "members": why_not})
        return min(fits, key=lambda m: (load.get(m.name, 0), not m.local, m.name))
