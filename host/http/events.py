"""``GET /v1/events``: health events and context changes as Server-Sent Events.

Each event's id is the stream's position: the health sequence number, and for
a stream that includes context changes, ``HEALTH:CONTEXT`` (both sequence
numbers), so one ``Last-Event-ID`` resumes both. Health events come from one
subscription shared by every stream (``HealthHub``); a resumed stream first
replays what the supervisor's event log still holds after its position. Context
changes come from a ``ContextSubscription`` per stream, resumed with
``since_seq``. Streams end with an ``end`` event when the launcher stops or
restarts the runtime (a browser's EventSource then reconnects and resumes), and
when a client reads too slowly to keep up.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import structlog
from starlette.concurrency import run_in_threadpool

from messages.context import ContextChange, ContextFilter, ContextGap
from messages.errors import GrymError
from messages.system import HealthEvent, HealthEventKind

from .encoding import plain

log = structlog.get_logger()
QUEUE_BOUND = 1000         # health events waiting for one slow stream; past it, the stream ends
TICK_S = 0.1               # how often a stream looks for context changes and for the end
KEEPALIVE_S = 15.0         # a comment line, so proxies keep an idle stream open
RETRY_MS = 1000            # the client's reconnection delay


@dataclass(frozen=True)
class Cursor:
    """Where a stream is: the last health and context sequence numbers sent."""

    health: int = 0
    context: int | None = None

    def id(self) -> str:
        return str(self.health) if self.context is None else f"{self.health}:{self.context}"

    @classmethod
    def parse(cls, text: str | None) -> "Cursor | None":
        """``12`` or ``12:345``; None for no id or one that is not ours."""
        if not text:
            return None
        health, _, context = text.strip().partition(":")
        try:
            h = int(health)
            c = int(context) if context else None
        except ValueError:
            return None
        return cls(h, c) if h >= 0 and (c is None or c >= 0) else None


def sse(event: str, data: Any, event_id: str | None = None) -> str:
    lines = [f"event: {event}"]
    if event_id is not None:
        lines.append(f"id: {event_id}")
    lines.append(f"data: {json.dumps(plain(data), separators=(',', ':'))}")
    return "\n".join(lines) + "\n\n"


def health_json(event: HealthEvent) -> dict[str, Any]:
    return {"seq": event.seq, "kind": event.kind.value, "service": event.service,
            "status": event.status.value, "reason": event.reason, "at": event.at,
            "cause": plain(event.cause)}


def change_json(change: ContextChange) -> dict[str, Any]:
    return {"seq": change.seq, "kind": change.kind.value, "item": change.item.to_dict()}


class HealthHub:
    """One health subscription of a host handle, fanned out to every open stream.

    The host API calls ``_publish`` on its listener thread; each stream has an
    asyncio queue on the server's loop."""

    def __init__(self, system: Any):
        self._queues: dict[asyncio.Queue, asyncio.AbstractEventLoop] = {}
        self._lock = threading.Lock()
        # ``on`` waits for the subscription to be confirmed: not on the launcher's
        # thread (streams replay the supervisor's log until events flow).
        threading.Thread(target=self._subscribe, args=(system,), name="grym-http-health",
                         daemon=True).start()

    def _subscribe(self, system: Any) -> None:
        for kind in HealthEventKind:
            try:
                system.health.on(kind.value, self._publish)
            except GrymError as exc:  # registered all the same: events flow once confirmed
                log.warning("health_subscription_unconfirmed", kind=kind.value, error=str(exc))

    def _publish(self, event: HealthEvent) -> None:
        with self._lock:
            queues = list(self._queues.items())
        for queue, loop in queues:
            loop.call_soon_threadsafe(_offer, queue, event)

    def subscribe(self) -> asyncio.Queue:
        queue: asyncio.Queue = asyncio.Queue(QUEUE_BOUND + 1)
        with self._lock:
            self._queues[queue] = asyncio.get_running_loop()
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        with self._lock:
            self._queues.pop(queue, None)


_OVERFLOW = object()


def _offer(queue: asyncio.Queue, event: HealthEvent) -> None:
    if queue.qsize() >= QUEUE_BOUND:
        if not queue.full():
            queue.put_nowait(_OVERFLOW)
        return
    queue.put_nowait(event)


@dataclass
class StreamRequest:
    health: bool
    context: ContextFilter | None   # None: no context changes
    start: Cursor | None            # from Last-Event-ID
    snapshot_s: float | None        # also send a `snapshot` of the figures this often


async def event_stream(runtime: Any, hub: HealthHub, request: StreamRequest,
                       ended: Callable[[], str | None], disconnected: Callable[[], Any],
                       snapshot: Callable[[], dict[str, Any]]) -> AsyncIterator[str]:
    """The stream's text. ``ended()`` names a reason to stop (shutdown, runtime
    restarted); ``disconnected()`` is awaited now and then to notice a gone client.

    The first event, ``start``, carries the position the stream starts from as
    its id, so a client that reconnects before any other event loses nothing."""
    queue = hub.subscribe()  # before the replay below: nothing falls between the two
    subscription = None
    start = request.start
    health_seq = start.health if start else 0
    context_seq = start.context if start else None

    def event_id() -> str:
        return Cursor(health_seq, context_seq if request.context is not None else None).id()

    try:
        yield f"retry: {RETRY_MS}\n\n"
        replay: list[HealthEvent] = []
        gaps: list[str] = []
        if request.health:
            events = await run_in_threadpool(runtime.health.events)
            latest = events[-1].seq if events else 0
            if start is None:
                health_seq = latest            # a new stream starts from now
            elif health_seq > latest:
                health_seq = 0                 # a new supervisor counts from 1 again
            replay = [e for e in events if e.seq > health_seq]
            if replay and replay[0].seq > health_seq + 1:
                gaps.append("health")
        if request.context is not None:
            subscription = await run_in_threadpool(runtime.context.subscribe, request.context,
                                                   context_seq if start else None)
            if subscription.gap:
                gaps.append("context")
            context_seq = subscription.seq
        yield sse("start", {"health_seq": health_seq, "context_seq": context_seq}, event_id())
        for source in gaps:
            yield sse("gap", {"source": source, "message": "the log no longer reaches back that "
                              "far: read the current state to catch up"})
        for event in replay:
            health_seq = event.seq
            yield sse("health", health_json(event), event_id())
        if request.snapshot_s:
            yield sse("snapshot", await run_in_threadpool(snapshot))
        last_write = last_snapshot = last_check = time.monotonic()
        while True:
            reason = ended()
            if reason:
                yield sse("end", {"reason": reason})
                return
            try:
                item = await asyncio.wait_for(queue.get(), TICK_S)
            except asyncio.TimeoutError:
                item = None
            if item is _OVERFLOW:
                yield sse("end", {"reason": "the client read too slowly; reconnect to resume"})
                return
            out: list[str] = []
            if isinstance(item, HealthEvent) and request.health and item.seq > health_seq:
                health_seq = item.seq
                out.append(sse("health", health_json(item), event_id()))
            while subscription is not None:
                change = subscription.next(timeout=0)
                if change is None:
                    break
                if isinstance(change, ContextGap):  # resumed after a restart, with a hole
                    context_seq = change.seq
                    out.append(sse("gap", {"source": "context", "message": change.reason},
                                   event_id()))
                elif context_seq is None or change.seq > context_seq:
                    context_seq = change.seq
                    out.append(sse("context", change_json(change), event_id()))
            now = time.monotonic()
            if request.snapshot_s and now - last_snapshot >= request.snapshot_s:
                last_snapshot = now
                out.append(sse("snapshot", await run_in_threadpool(snapshot)))
            if not out and now - last_write >= KEEPALIVE_S:
                out.append(": keep-alive\n\n")
            if out:
                last_write = now
                yield "".join(out)
            if now - last_check >= 1.0:
                last_check = now
                if await disconnected():
                    return
    finally:
        hub.unsubscribe(queue)
        if subscription is not None:
            # Its listener thread takes up to a tick to notice: not on the loop.
            threading.Thread(target=subscription.close, name="grym-sse-close",
                             daemon=True).start()
