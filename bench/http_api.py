"""The HTTP face beside route_task and the bare ask: what HTTP adds to an echo task.

Each client thread keeps one connection open, as a real client of a daemon would.
Clients are the standard library's ``http.client``, the cheapest Python client, so
that the figures are the server's: ``httpx`` costs about 0.7 ms more per request by
itself on this machine. Measured inside ``python -m bench runtime``, in the same run
and on the same runtime as the floor and route_task (and by ``bench.http_designs``).
"""
from __future__ import annotations

import http.client
import json
import threading
from typing import Any, Callable
from urllib.parse import urlsplit

from .stats import concurrent_calls

HTTP_CONFIG = {"enabled": True}  # on the admin port + 2, which the launcher keeps free


def connection_caller(url: str) -> Callable[[str, str, bytes | None], bytes]:
    """``request(method, path, body)``: the answer's body, on this thread's connection."""
    parts = urlsplit(url)
    local = threading.local()

    def request(method: str, path: str, body: bytes | None = None) -> bytes:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (1, 2):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(parts.hostname, parts.port,
                                                               timeout=30)
            try:
                conn.request(method, path, body, headers)
                response = conn.getresponse()
            except (ConnectionError, http.client.RemoteDisconnected):
                # uvicorn closes a connection idle for 5 s: open a new one, as httpx would
                conn.close()
                local.conn = None
                if attempt == 2:
                    raise
                continue
            data = response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
            return data
        raise AssertionError("unreachable")
    return request


def echo_caller(url: str, data: Any = None) -> Callable[..., Any]:
    """``call(...)``: POST one echo task (no context fetch) with ``data``."""
    request = connection_caller(url)
    body = json.dumps({"data": data}).encode()
    return lambda *_: request("POST", "/v1/tasks/echo-plain", body)


def live_caller(url: str) -> Callable[..., Any]:
    """``call()``: GET /livez: the HTTP floor (a round trip through uvicorn and FastAPI
    that calls nothing in the runtime)."""
    request = connection_caller(url)
    return lambda *_: request("GET", "/livez")


def measure_throughput(url: str, clients: int, per_client: int) -> dict[str, float]:
    """HTTP echo from ``clients`` threads at once, each with its own kept-alive connection."""
    call = echo_caller(url, 1)
    return concurrent_calls(lambda n, i: call(), clients, per_client)[0]
