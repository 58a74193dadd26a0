"""What the routes call: the launcher's current host handle, swapped on a runtime restart."""
from __future__ import annotations

from typing import Any, Iterable

from .events import HealthHub


class HttpState:
    def __init__(self, eager: Iterable[str], token: str | None, max_body_bytes: int):
        self.eager = frozenset(eager)      # readiness waits for these services
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.system: Any = None            # a ServiceSystem
        self.hub: HealthHub | None = None
        self.generation = 0                # event streams of an older one end
        self.closing: str | None = None    # why every route now answers SHUTTING_DOWN

    def attach(self, system: Any) -> None:
        """Serve ``system`` from now on; the handle it replaces is closed."""
        hub = HealthHub(system)
        old, self.system, self.hub = self.system, system, hub
        self.generation += 1
        if old is not None:
            old.close()

    def close(self, reason: str = "shutting down") -> None:
        self.closing = reason
        if self.system is not None:
            self.system.close()
