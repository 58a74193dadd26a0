"""What an actor system of the runtime offers, and whether a service's requirements are met.

The runtime spans hosts the way Thespian does: each host runs an actor system
(the leader's, started by the launcher, and each member's, started by
``run.py join``) that joins the leader's convention and advertises
*capabilities*; an actor created with ``targetActorRequirements`` is started
by a system whose capabilities its class's ``actorSystemCapabilityCheck``
accepts. This module names those capabilities, measures them (``probe``), and
holds the one rule that compares them with a service's ``requires`` table
(``meets``), used by the supervisor's placement and by the service actor's
capability check alike.

The CUDA probe runs torch in a child interpreter: a process that initialises
CUDA cannot fork children that use it (see the shared notes), and the
launcher and a member fork every actor. It is skipped, at no cost, where no
GPU driver is present or torch is not installed.
"""
from __future__ import annotations

import functools
import importlib.util
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import psutil

# Capabilities this runtime adds to Thespian's own ("Admin Port", "Process Startup Method").
MEMBER = "grym.member"            # the member's name, unique in the convention
ADDRESS = "grym.address"          # where its admin listens, "host:port" (shown by status)
CORES, MEMORY = "cores", "memory"
GPU, CUDA_DEVICES, CUDA_NAMES = "gpu", "cuda_devices", "cuda_device_names"
START_METHOD = "Process Startup Method"
CONVENTION = "Convention Address.IPv4"  # Thespian's: the leader's admin, "host:port"
# The start method of the actor system a process belongs to; set before its admin starts,
# inherited by every actor process (forked or spawned), read by ``process_start_method``.
START_METHOD_ENV = "GRYM_START_METHOD"
# Test-only: a JSON object laid over what ``probe`` measured (a CPU machine that says gpu = true).
TEST_OVERRIDE_ENV = "GRYM_TEST_CAPABILITIES"
# Where a GPU driver shows itself without loading anything (NVIDIA; AMD ROCm's kfd).
_GPU_DRIVER_PATHS = ("/proc/driver/nvidia/gpus", "/dev/nvidiactl", "/dev/kfd")
CUDA_PROBE_TIMEOUT_S = 120.0
_CUDA_PROBE = (
    "import json, torch\n"
    "n = torch.cuda.device_count() if torch.cuda.is_available() else 0\n"
    "print(json.dumps({'count': n, 'names': [torch.cuda.get_device_name(i) for i in range(n)]}))\n"
)


@dataclass(frozen=True)
class Rule:
    capability: str
    compare: str        # "flag": true or false; "at_least": a number; "equal": the same value
    what: str           # how a person should write it


# The keys of a service's ``requires`` table.
REQUIREMENTS: Mapping[str, Rule] = {
    "gpu": Rule(GPU, "flag", "true or false"),
    "cuda_devices": Rule(CUDA_DEVICES, "at_least", "a whole number >= 1"),
    "cores": Rule(CORES, "at_least", "a whole number >= 1"),
    "memory": Rule(MEMORY, "at_least", "a size such as '16GB'"),
    "member": Rule(MEMBER, "equal", "a member's name (run.py join --name)"),
    "start_method": Rule(START_METHOD, "equal", "\"fork\" or \"spawn\""),
}


def meets(capabilities: Mapping[str, Any], requirements: Mapping[str, Any]) -> str | None:
    """None when ``capabilities`` meet every requirement, else why not (the first miss)."""
    for key, wanted in requirements.items():
        rule = REQUIREMENTS.get(key)
        if rule is None:
            return f"{key} is not a requirement this runtime knows"
        have = capabilities.get(rule.capability)
        if rule.compare == "flag":
            ok = bool(have) == bool(wanted)
        elif rule.compare == "at_least":
            ok = isinstance(have, (int, float)) and not isinstance(have, bool) and have >= wanted
        else:
            ok = have == wanted
        if not ok:
            return f"{key} = {shown(wanted)} wanted, it has {shown(have)}"
    return None


def shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    return json.dumps(value) if isinstance(value, str) else str(value)


# -- what this host offers --------------------------------------------------------------
def probe() -> dict[str, Any]:
    """Cores, memory and CUDA devices of this host, with the test-only override laid over."""
    found = {CORES: len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count() or 1,
             MEMORY: psutil.virtual_memory().total, **cuda_devices()}
    return {**found, **overridden_for_tests()}


@functools.lru_cache(maxsize=1)  # a launcher that restarts its runtime asks once
def cuda_devices() -> dict[str, Any]:
    """{gpu, cuda_devices, cuda_device_names} as torch reports them, asked in a child
    interpreter (never here: this process forks); none without a driver or torch."""
    none = {GPU: False, CUDA_DEVICES: 0, CUDA_NAMES: []}
    if not any(Path(p).exists() for p in _GPU_DRIVER_PATHS) \
            or importlib.util.find_spec("torch") is None:
        return none
    try:
        out = subprocess.run([sys.executable, "-c", _CUDA_PROBE], capture_output=True, text=True,
                             timeout=CUDA_PROBE_TIMEOUT_S, check=True).stdout
        report = json.loads(out.strip().splitlines()[-1])
        count, names = int(report["count"]), [str(n) for n in report["names"]]
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, IndexError):
        return none
    return {GPU: count > 0, CUDA_DEVICES: count, CUDA_NAMES: names}


def overridden_for_tests() -> dict[str, Any]:
    raw = os.environ.get(TEST_OVERRIDE_ENV)
    if not raw:
        return {}
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise ValueError(f"{TEST_OVERRIDE_ENV} must hold a JSON object, got {raw!r:.80}")
    return value


def advertised(name: str, bind_address: str, admin_port: int, start_method: str,
               leader: str) -> dict[str, Any]:
    """The capabilities an actor system of the runtime starts with: Thespian's (admin
    port, start method, the convention's leader), its name and address, and ``probe``."""
    return {"Admin Port": admin_port, START_METHOD: start_method, CONVENTION: leader,
            MEMBER: name, ADDRESS: f"{bind_address}:{admin_port}", **probe()}


def default_name(admin_port: int) -> str:
    """This host's name and the admin port: unique among the systems of one convention."""
    return f"{socket.gethostname()}:{admin_port}"


def process_start_method() -> str | None:
    """How this process's actor system starts its actors; None in a process that no actor
    system of the runtime started (a test or a benchmark calling a service in-process)."""
    return os.environ.get(START_METHOD_ENV)
