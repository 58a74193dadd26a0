"""A program that embeds a runtime without naming a port, as any host would.

Run as ``python -m tests.integration.embedded_host``: it starts the runtime,
runs one task, prints one JSON line, and keeps the runtime up until a line
arrives on stdin.
"""
from __future__ import annotations

import json
import sys

from host import ServiceSystem
from messages import Task


def main() -> int:
    with ServiceSystem.start({"services": {"echo": {"kind": "echo", "eager": True}}}) as system:
        result = system.router.route_task(Task(id="embedded", type="echo", data="hello"))
        print(json.dumps({"admin_port": system.admin_port, "info_port": system.info.admin_port,
                          "answer": result.unwrap(),
                          "pids": [p.pid for p in system.processes()]}), flush=True)
        sys.stdin.readline()
    return 0


if __name__ == "__main__":
    sys.exit(main())
