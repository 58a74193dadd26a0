"""Keep every Thespian socket on the configured address (loopback by default).

Thespian's TCP transport binds each actor's listening socket to all
interfaces and unpickles whatever arrives, so anyone who can reach a port can
run code in the process. THESPIAN_BASE_IPADDR only changes the address that
is advertised; the bind itself is patched here. The patch must be in place in
every process that opens a socket: the launcher applies it before the admin
is forked (children inherit it), the host applies it before it joins, and a
spawned process applies it when it imports this package (the setting travels
in the environment).
"""
from __future__ import annotations

import os

from thespian.system.transport import IPBase

ENV = "GRYM_BIND_ADDRESS"
_ANY = ("", "0.0.0.0")


def restrict_bind(address: str) -> None:
    os.environ[ENV] = address
    os.environ["THESPIAN_BASE_IPADDR"] = address

    def bind_args(self):  # noqa: ANN001 - Thespian's IPActorAddress
        host, port = self.bindname[0], self.bindname[1]
        bound = os.environ.get(ENV, address)
        return ((bound if host in _ANY else host, port),)

    IPBase.IPActorAddress.bindArgs = property(bind_args)


if os.environ.get(ENV):
    restrict_bind(os.environ[ENV])
