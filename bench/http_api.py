"""The HTTP face beside route_task and the bare ask: what HTTP adds to an echo task.

Each client thread keeps one connection open (an ``httpx.Client``), as a real
client of a daemon would. Measured inside ``python -m bench runtime``, in the
same run and on the same runtime as the floor and route_task.
"""
from __future__ import annotations

import threading
from typing import Any, Callable

import httpx

from .stats import concurrent_calls

HTTP_CONFIG = {"enabled": True}  # on the admin port + 2, which the launcher keeps free


def echo_caller(url: str) -> Callable[[Any], Any]:
    """``call(data)``: POST one echo task (no context fetch) on this thread's connection."""
    local = threading.local()

    def call(data: Any) -> Any:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=url, timeout=30)
        response = client.post("/v1/tasks/echo-plain", json={"data": data})
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:200]}")
        return response.json()["data"]
    return call


def live_caller(url: str) -> Callable[[Any], Any]:
    """``call()``: GET /livez on this thread's connection: the HTTP floor (a round trip
    through uvicorn and FastAPI that calls nothing in the runtime)."""
    local = threading.local()

    def call(_: Any = None) -> Any:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(base_url=url, timeout=30)
        return client.get("/livez").status_code
    return call


def measure_throughput(url: str, clients: int, per_client: int) -> dict[str, float]:
    """HTTP echo from ``clients`` threads at once, each with its own kept-alive connection."""
    call = echo_caller(url)
    return concurrent_calls(lambda n, i: call(i), clients, per_client)[0]
