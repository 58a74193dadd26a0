#!/usr/bin/env python3
"""grym-synth runtime: one entry point for the demo, the daemon and its tools.

    python run.py demo                      run tasks through the runtime on the embedded default
    python run.py make-model PATH --size tiny|base
    python run.py start|serve|stop|status|submit|context|logs|check-config ...  (the daemon CLI)
    python run.py join LEADER_HOST:PORT [--port P] [--name N]   this host joins a runtime as a member
"""
from __future__ import annotations

import sys

# A process started with spawn by one started from here (a member's admin and actors, under
# system.start_method = "spawn") imports this file as its __main__: the runtime's per-process
# set-up (signed frames, the bind address) must come with it, before Thespian's first socket.
import runtime  # noqa: F401,E402


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else "--help"
    if command == "demo":
        from host.demo import main as demo
        return demo(argv[1:])
    if command == "make-model":
        from services.wav2vec2.checkpoint import main as make_model
        return make_model(argv[1:])
    from host.cli import main as cli
    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())
