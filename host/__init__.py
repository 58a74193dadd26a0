"""The host side: the API a Python process embeds (``ServiceSystem``), the launcher
that runs the actor system from a clean interpreter, the daemon's CLI, its TOML
loading and its metrics endpoint.

Nothing here imports actor or service code: the supervisor is created by its
class's dotted name and found again by its global name.
"""
import runtime  # noqa: F401 - loopback binding and logging, before any socket opens

from .system import ServiceSystem

__all__ = ["ServiceSystem"]
