"""Someone else's process on the same machine, trying to run code in the runtime.

It imports nothing of this project (the test runs it with ``python -I``) and
knows only the runtime's ports. Each frame it sends carries an object whose
unpickling creates a folder (the marker): if the folder appears, code ran.

    python -I raw_probe.py MODE MARKER_DIR PORT...     prints one JSON line

MODE: ``none`` (Thespian's own frame, no key), ``wrong`` (tagged with a key
of its own), ``key`` (tagged with the key in ``$PROBE_KEY_FILE``, in the
runtime's layout: the positive control), ``oversize`` (a header announcing
``$PROBE_ANNOUNCE_BYTES``, and nothing after it) or ``thespian`` (a stock
Thespian endpoint joins the admin at the first port, looks the supervisor up
by its global name and sends it the object).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import pickle
import socket
import struct
import sys
import threading


class RunsCode:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def frame(body: bytes) -> bytes:
    return b"%d>" % len(body) + body


def send_raw(port: int, data: bytes) -> str:
    """What the port did with ``data``: answered, closed the connection, or nothing."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data)
            answer = sock.recv(100)
        except socket.timeout:
            return "no answer"
        except OSError as exc:
            return f"closed ({exc.strerror})"
    return f"answered {answer[:40]!r}" if answer else "closed"


def raw(mode: str, marker_dir: str, port: int) -> str:
    payload = pickle.dumps((None, RunsCode(os.path.join(marker_dir, f"{mode}-{port}"))))
    if mode == "none":
        return send_raw(port, frame(payload))
    if mode == "wrong":
        key = os.urandom(32)
        return send_raw(port, frame(hmac.digest(key, payload, hashlib.sha256) + payload))
    if mode == "key":
        import blake3
        with open(os.environ["PROBE_KEY_FILE"], "rb") as f:
            key = f.read()
        rest = struct.pack("<IQ", 0, len(payload)) + payload  # no out-of-band buffers
        return send_raw(port, frame(blake3.blake3(rest, key=key).digest() + rest))
    announced = int(os.environ.get("PROBE_ANNOUNCE_BYTES", 10 ** 12))
    return send_raw(port, b"%d>" % announced)  # oversize: the header alone


def thespian(marker_dir: str, port: int) -> str:
    from datetime import timedelta

    from thespian.actors import ActorSystem
    from thespian.system import systemBase

    # How long Thespian keeps asking an admin that does not answer (11 s of 2 s asks,
    # then one more): every ask is the same unsigned frame, refused at once the same way.
    systemBase.MAX_SYSTEM_SHUTDOWN_DELAY = timedelta(seconds=1)
    systemBase.MAX_ADMIN_STATUS_REQ_DELAY = timedelta(seconds=0.5)
    result = {"outcome": "no answer"}

    def probe() -> None:
        try:
            asys = ActorSystem("multiprocTCPBase", {"Admin Port": port}, transientUnique=True)
            supervisor = asys.createActor("supervisor.actor.Supervisor",
                                          globalName="grym.supervisor")
            asys.tell(supervisor, RunsCode(os.path.join(marker_dir, f"thespian-{port}")))
            result["outcome"] = f"sent to {supervisor}"
        except Exception as exc:  # noqa: BLE001 - reported
            result["outcome"] = f"refused: {type(exc).__name__}: {exc}"

    # Thespian may wait a long time for an admin that never answers.
    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(20)
    return result["outcome"]


def main(mode: str, marker_dir: str, ports: list[int]) -> None:
    if mode == "thespian":
        out = {ports[0]: thespian(marker_dir, ports[0])}
    else:
        out = {port: raw(mode, marker_dir, port) for port in ports}
    print(json.dumps(out), flush=True)
    os._exit(0)  # a stuck Thespian thread must not keep us alive


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]])
