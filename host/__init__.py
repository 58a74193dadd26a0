"""The host side: the API a Python process embeds (``ServiceSystem``), the launcher
that runs the actor system from a clean interpreter, the daemon's CLI, its TOML
loading and its metrics endpoint.

Nothing here imports actor or service code: the supervisor is created by its
class's dotted name and found again by its global name.
"""
import runtime  # noqa: F401 - loopback binding and logging, before any socket opens

__all__ = ["ServiceSystem"]


def __getattr__(name: str):
    # Lazy: ``python -m host.launcher`` must not import host.launcher twice
    # (once through host.system, once as __main__).
    if name == "ServiceSystem":
        from .system import ServiceSystem
        return ServiceSystem
    raise AttributeError(name)
