"""Which torch device a model service runs on: one rule, without torch, tested on CPU.

A kind's ``device`` setting is ``cpu``, ``cuda``, ``cuda:N`` or ``auto``. CUDA
cannot start in a process made by fork (see the shared notes), so CUDA needs
an actor system that starts its actors with spawn: ``device_requirements``
says so for placement (a GPU, enough CUDA devices, spawn), and
``select_device`` refuses it in a forked process and makes ``auto`` choose the
CPU there. Torch is asked (``cuda_count``) only where CUDA may be used.
"""
from __future__ import annotations

import re
from typing import Any, Callable

from messages.errors import InitError

DEVICES = ("cpu", "cuda", "auto")
_CUDA_INDEX = re.compile(r"^cuda:(\d+)$")


def is_device(name: Any) -> bool:
    return isinstance(name, str) and (name in DEVICES or bool(_CUDA_INDEX.match(name)))


def cuda_index(name: str) -> int | None:
    """The CUDA device ``name`` asks for (``cuda`` is device 0); None for cpu and auto."""
    if name == "cuda":
        return 0
    match = _CUDA_INDEX.match(name)
    return int(match.group(1)) if match else None


def device_requirements(name: str) -> dict[str, Any]:
    """What an actor system must offer a service on device ``name`` (a ``requires`` table)."""
    index = cuda_index(name)
    if index is None:
        return {}
    return {"gpu": True, "cuda_devices": index + 1, "start_method": "spawn"}


def select_device(name: str, cuda_count: Callable[[], int], start_method: str | None) -> str:
    """The torch device to load on. ``cuda_count``: how many CUDA devices torch sees;
    ``start_method``: how this process was started (None: not by an actor system)."""
    if name == "cpu":
        return "cpu"
    forked = start_method == "fork"
    if name == "auto":
        return "cuda" if not forked and cuda_count() > 0 else "cpu"
    index = cuda_index(name)
    if index is None:
        raise InitError(f"device {name!r} is not one of {', '.join(DEVICES)} or cuda:N")
    if forked:
        raise InitError(f"device {name!r} cannot be used in a process started by fork (CUDA "
                        "cannot start after fork): run the service where actors start with "
                        "spawn (system.start_method = \"spawn\", or a member joined with it)")
    count = cuda_count()
    if count == 0:
        raise InitError(f"device {name!r} was asked for but torch sees no CUDA GPU")
    if index >= count:
        raise InitError(f"device {name!r} was asked for but torch sees {count} CUDA "
                        f"device(s): cuda:0 to cuda:{count - 1}")
    return name
