"""The supervisor actor, its policies, and the host API (``ServiceSystem``)."""
from . import network  # noqa: F401 - restricts socket binding in every process that imports us


def __getattr__(name: str):
    # Lazy, so that actor modules can import supervisor.* without a cycle.
    if name == "ServiceSystem":
        from .system import ServiceSystem
        return ServiceSystem
    raise AttributeError(name)
