"""The routes: tasks, services, health, context, events, the status page and the docs.

Handlers are thin: they turn a request into host API calls (``ServiceSystem``:
route_task, ExecuteTask, context.*, health.*, services(), metrics()) run on
the threadpool, where each worker thread has its own Thespian endpoint, and
turn the answer (or the typed error) into JSON.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from fastapi import Body, FastAPI, Header, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse

from messages.context import ContextFilter, ContextItem
from messages.errors import Conflict, ErrorCode, GrymError, ServiceUnavailable, ShuttingDown
from messages.system import ExecuteTask
from messages.task import Task, TaskResult

from . import views
from .bodies import (
    AUDIO_TYPES, JSON_TYPES, PCM_TYPES, ServiceTaskBody, TaskBody, audio_task, json_task,
    media_type, new_task_id,
)
from .encoding import plain, result_json
from .errors import HttpError, error_response, from_starlette, validation_error
from .events import Cursor, StreamRequest, event_stream, health_json
from .guard import Guard
from .state import HttpState

PAGES = Path(__file__).resolve().parent
ERRORS = {status: {"description": text, "content": {"application/json": {"example": {
    "error": {"code": code, "message": "...", "details": {}}}}}}
    for status, code, text in (
        (400, "INVALID_INPUT", "malformed JSON, bad input, or an unknown task type"),
        (404, "NOT_FOUND", "no such item, or SERVICE_NOT_FOUND"),
        (413, "PAYLOAD_TOO_LARGE", "the body is over http.max_body_bytes"),
        (422, "INVALID_INPUT", "a field of the wrong type, out of range, or unknown"),
        (429, "OVERLOADED", "the service's queue is full; see Retry-After"),
        (503, "SERVICE_UNAVAILABLE", "the service is down or failed, or SHUTTING_DOWN"),
        (504, "TIMEOUT", "no answer within the task's timeout"))}
TASK_BODY = {"requestBody": {"required": False, "content": {
    "application/json": {"schema": TaskBody.model_json_schema()},
    **{t: {"schema": {"type": "string", "format": "binary"}}
       for t in ("audio/wav", "audio/flac", "audio/ogg", "audio/mpeg")},
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"},
                                 "description": "raw PCM: ?sample_rate=HZ&dtype=float32|"
                                                "float64|int16[&channels=N]"}}}}
SERVICE_TASK_BODY = {"requestBody": {**TASK_BODY["requestBody"], "content": {
    **TASK_BODY["requestBody"]["content"],
    "application/json": {"schema": ServiceTaskBody.model_json_schema()}}}}


class ContextItemBody(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: str = Field(..., min_length=1, max_length=128)
    content: Any = Field(..., description="any JSON value")
    source: str = Field("http", min_length=1)
    priority: int | Literal["low", "normal", "high", "critical"] = "normal"
    tags: list[str] = Field(default_factory=list)
    task_id: str | None = None
    workflow_id: str | None = None
    id: str | None = Field(None, description="store under this id (replacing an item there)")
    ttl_s: float | None = Field(None, gt=0)
    sliding_ttl: bool | None = None


class ContextPatch(BaseModel):
    """A JSON Merge Patch (RFC 7396) of an item: ``content`` merges, other fields are replaced."""

    model_config = ConfigDict(extra="forbid", strict=True)
    type: str | None = None
    content: Any = None
    source: str | None = None
    priority: int | Literal["low", "normal", "high", "critical"] | None = None
    tags: list[str] | None = None
    task_id: str | None = None
    workflow_id: str | None = None
    ttl_s: float | None = None
    sliding_ttl: bool | None = None


def create_app(state: HttpState) -> Any:
    """The ASGI app: the FastAPI routes behind the token and body-size guard."""
    app = FastAPI(title="grym-synth runtime", version="1", docs_url=None, redoc_url=None,
                  description="Tasks, services, health and shared context of a running "
                              "runtime. Errors are {\"error\": {code, message, details}}.")

    def system() -> Any:
        if state.closing:
            raise ShuttingDown(f"the runtime is {state.closing}")
        if state.system is None:
            raise ServiceUnavailable("the runtime is restarting")
        return state.system

    async def call(fn: Any, *args: Any) -> Any:
        return await run_in_threadpool(fn, *args)

    # -- errors -------------------------------------------------------------------------
    @app.exception_handler(GrymError)
    async def on_grym_error(_request: Request, exc: GrymError) -> Response:
        return error_response(exc)

    @app.exception_handler(HTTPException)
    async def on_http_error(_request: Request, exc: HTTPException) -> Response:
        return error_response(from_starlette(exc))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_request: Request, exc: RequestValidationError) -> Response:
        return error_response(validation_error(exc.errors()))

    # -- tasks ------------------------------------------------------------------------------
    async def task_fields(request: Request, model: type[TaskBody]) -> dict[str, Any]:
        media = media_type(request.headers.get("content-type"))
        raw = await request.body()
        if media in JSON_TYPES or media.endswith("+json"):
            refuse_unknown_query(request, {"arrays"})
            return json_task(raw, model)
        if media in AUDIO_TYPES or media in PCM_TYPES:
            return audio_task(raw, media, request.query_params, model)
        raise HttpError(415, "UNSUPPORTED_MEDIA_TYPE", f"cannot take a {media} body: send "
                        "application/json, audio (wav, flac, ogg, mpeg) or raw PCM "
                        "(application/octet-stream with ?sample_rate=&dtype=)",
                        {"content_type": media})

    def make_task(fields: dict[str, Any], task_type: str) -> Task:
        return Task(id=fields["id"] or new_task_id(), type=task_type, data=fields["data"],
                    priority=fields["priority"], timeout_s=fields["timeout_s"],
                    metadata=fields["metadata"], store_results=fields["store_results"])

    def task_response(result: TaskResult, arrays: str) -> Response:
        if result.ok:
            return JSONResponse(result_json(result, arrays))
        extra = {"task_id": result.task_id, "status": result.status.value,
                 "metrics": plain(result.metrics)}
        return error_response(result.error, extra=extra)

    @app.post("/v1/tasks/{task_type}", tags=["tasks"], responses=ERRORS, openapi_extra=TASK_BODY,
              summary="Run a task through the route table")
    async def submit_task(request: Request, task_type: str = PathParam(..., max_length=128),
                          arrays: Literal["list", "base64"] = "list") -> Response:
        """A JSON body `{"data", "priority", "timeout_s", "metadata", "store_results", "id"}`,
        or an audio body with those fields as query parameters. The answer is the
        TaskResult; numpy arrays as lists, or with `?arrays=base64` as little-endian
        float32 `{"dtype", "shape", "base64"}`."""
        task = make_task(await task_fields(request, TaskBody), task_type)
        result = await call(system().router.route_task, task)
        return task_response(result, arrays)

    @app.post("/v1/services/{name}/tasks", tags=["tasks"], responses=ERRORS,
              openapi_extra=SERVICE_TASK_BODY, summary="Run a task on a named service")
    async def submit_service_task(request: Request, name: str,
                                  arrays: Literal["list", "base64"] = "list") -> Response:
        """As `POST /v1/tasks/{type}`, with the task `type` in the body (or the query for
        audio), skipping the route table and the context fetch."""
        fields = await task_fields(request, ServiceTaskBody)
        task = make_task(fields, fields["type"])
        runtime = system()
        result = await call(runtime.run_task, ExecuteTask(task, name), None)
        return task_response(result, arrays)

    # -- services and health ------------------------------------------------------------------
    @app.get("/v1/services", tags=["services"], summary="Every service and its figures")
    async def list_services() -> dict[str, Any]:
        return {"services": await call(views.services, system())}

    @app.get("/v1/services/{name}", tags=["services"], responses=ERRORS,
             summary="One service: state, restarts, queue, p50/p99, last error")
    async def get_service(name: str) -> dict[str, Any]:
        return (await call(views.services, system(), name))[0]

    @app.get("/v1/health/events", tags=["health"], summary="Recent health events and states")
    async def health_events(since: int = Query(0, ge=0, description="only events after this seq"),
                            limit: int = Query(100, ge=1, le=1000)) -> dict[str, Any]:
        runtime = system()
        events = [e for e in await call(runtime.health.events) if e.seq > since][-limit:]
        statuses = await call(runtime.health.statuses)
        return {"statuses": {k: v.value for k, v in statuses.items()},
                "events": [health_json(e) for e in events]}

    @app.get("/livez", tags=["health"], summary="Live while the launcher runs (no token needed)")
    @app.get("/v2/health/live", tags=["health"], summary="KServe v2: server live")
    async def live() -> dict[str, Any]:
        return {"live": True}

    @app.get("/readyz", tags=["health"], responses=ERRORS,
             summary="Ready once every eager service is online")
    @app.get("/v2/health/ready", tags=["health"], responses=ERRORS, summary="KServe v2: ready")
    async def ready() -> Response:
        runtime = system()
        reasons = views.not_ready(await call(runtime.services, views.VIEW_TIMEOUT_S), state.eager)
        if reasons:
            return error_response(ServiceUnavailable("not ready: " + "; ".join(reasons),
                                                     {"reasons": reasons}))
        return JSONResponse({"ready": True})

    @app.get("/v2/models/{name}/ready", tags=["health"], responses=ERRORS,
             summary="KServe v2: the named service is serving")
    async def model_ready(name: str) -> Response:
        runtime = system()
        infos = [s for s in await call(runtime.services, views.VIEW_TIMEOUT_S)
                 if s.name == name or s.replica_of == name]  # ready when one replica serves
        if not infos:
            raise HttpError(404, ErrorCode.SERVICE_NOT_FOUND.value, f"no service named {name!r}",
                            {"service": name})
        if not any(s.status in views.SERVING for s in infos):
            return error_response(ServiceUnavailable(
                f"service {name!r} is {infos[0].status.value}",
                {"service": name, "state": infos[0].status.value}))
        return JSONResponse({"name": name, "ready": True})

    # -- context --------------------------------------------------------------------------------
    @app.post("/v1/context", tags=["context"], status_code=201, responses=ERRORS,
              summary="Store an item (a new id unless one is given)")
    async def store_context(item: ContextItemBody) -> Response:
        stored = ContextItem(**{**item.model_dump(), "tags": frozenset(item.tags)})
        ack = await call(system().context.store, stored)
        return JSONResponse(ack_json(ack), status_code=201, headers={
            "Location": f"/v1/context/{ack.item_id}", "ETag": etag(ack.version)})

    @app.get("/v1/context/stats", tags=["context"], summary="Items, bytes, evictions, expirations")
    async def get_context_stats() -> dict[str, Any]:
        return await call(views.context_stats, system())

    @app.get("/v1/context/{item_id}", tags=["context"], responses=ERRORS, summary="One item")
    async def get_context(item_id: str) -> Response:
        item = await call(system().context.retrieve, item_id)
        return JSONResponse(plain(item.to_dict()), headers={"ETag": etag(item.version)})

    @app.get("/v1/context", tags=["context"], responses=ERRORS,
             summary="Query items (every given criterion must hold)")
    async def query_context(request: Request,
                            order: Literal["newest", "oldest", "priority"] = "newest",
                            limit: int = Query(100, ge=1, le=10_000),
                            offset: int = Query(0, ge=0)) -> dict[str, Any]:
        refuse_unknown_query(request, FILTER_PARAMS | {"order", "limit", "offset"})
        flt = context_filter(request, order=order, limit=limit, offset=offset)
        items = await call(system().context.query, flt)
        return {"total": items.total, "items": [plain(i.to_dict()) for i in items.items]}

    @app.patch("/v1/context/{item_id}", tags=["context"], responses={
        **ERRORS, 412: {"description": "If-Match names a version that is no longer current"}},
        summary="JSON Merge Patch an item; If-Match: \"VERSION\" makes it conditional")
    async def patch_context(item_id: str, request: Request,
                            patch: ContextPatch = Body(..., media_type="application/merge-patch+json"),
                            if_match: str | None = Header(None),
                            expected_version: int | None = Query(
                                None, ge=0, description="for clients that cannot send "
                                "If-Match: a stale one is 409 CONFLICT")) -> Response:
        media = media_type(request.headers.get("content-type"))
        if media not in ("application/merge-patch+json", "application/json"):
            raise HttpError(415, "UNSUPPORTED_MEDIA_TYPE", "send the patch as "
                            "application/merge-patch+json", {"content_type": media})
        changes = {k: getattr(patch, k) for k in patch.model_fields_set}
        if "tags" in changes and changes["tags"] is not None:
            changes["tags"] = frozenset(changes["tags"])
        version = version_of(if_match) if if_match is not None else expected_version
        try:
            ack = await call(system().context.update, item_id, changes, version)
        except Conflict as exc:
            if if_match is not None:
                return error_response(exc, status=412)
            raise
        return JSONResponse(ack_json(ack), headers={"ETag": etag(ack.version)})

    @app.delete("/v1/context/{item_id}", tags=["context"], responses=ERRORS, summary="Delete")
    async def delete_context(item_id: str) -> dict[str, Any]:
        return ack_json(await call(system().context.delete, item_id))

    # -- events -----------------------------------------------------------------------------------
    @app.get("/v1/events", tags=["events"], summary="Health events and context changes (SSE)",
             response_class=StreamingResponse)
    async def events(request: Request,
                     health: bool = Query(True, description="include health events"),
                     context: bool = Query(False, description="include every context change "
                                           "(any filter parameter implies it)"),
                     snapshot_s: float | None = Query(None, ge=0.5, le=3600, description=(
                         "also send the services' and the store's figures this often")),
                     last_event_id: str | None = Header(None)) -> Response:
        """`text/event-stream`. Events: `start`, `health`, `context`, `gap`, `snapshot`,
        `end`. The id is `HEALTH` or `HEALTH:CONTEXT` sequence numbers; send it back as
        `Last-Event-ID` (or `?last_event_id=`) to resume. Filter parameters as for
        `GET /v1/context`."""
        refuse_unknown_query(request, FILTER_PARAMS | {"health", "context", "snapshot_s",
                                                        "last_event_id"})
        runtime = system()
        wants_context = context or any(p in request.query_params for p in FILTER_PARAMS)
        start = Cursor.parse(last_event_id or request.query_params.get("last_event_id"))
        stream = StreamRequest(health=health,
                               context=context_filter(request) if wants_context else None,
                               start=start, snapshot_s=snapshot_s)
        generation = state.generation
        ended = lambda: state.closing or (  # noqa: E731
            "the runtime restarted" if state.generation != generation else None)
        snapshot = lambda: {"services": views.services(runtime),  # noqa: E731
                            "context": views.context_stats(runtime)}
        return StreamingResponse(
            event_stream(runtime, state.hub, stream, ended, request.is_disconnected, snapshot),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- pages -------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def status_page() -> Response:
        return HTMLResponse((PAGES / "status.html").read_text())

    @app.get("/docs", include_in_schema=False)
    async def docs_page() -> Response:
        return HTMLResponse((PAGES / "docs.html").read_text())

    return Guard(app, state.token, state.max_body_bytes)


# Query parameters of a context filter (GET /v1/context and GET /v1/events).
FILTER_PARAMS = frozenset({"type", "source", "tag", "tags_mode", "task_id", "workflow_id",
                           "min_priority", "created_since", "created_before", "updated_since",
                           "updated_before", "content"})


def context_filter(request: Request, **paging: Any) -> ContextFilter:
    """The filter from the query: repeated or comma-separated ``type``, ``source`` and
    ``tag``; ``content`` as a JSON object of dotted paths to values."""
    q = request.query_params

    def many(name: str) -> frozenset[str] | None:
        values = [v for raw in q.getlist(name) for v in raw.split(",") if v]
        return frozenset(values) if values else None

    def number(name: str) -> float | None:
        if name not in q:
            return None
        try:
            return float(q[name])
        except ValueError:
            raise query_error(name, f"must be a number of seconds, got {q[name]!r:.40}") from None

    fields: dict[str, Any] = {
        "types": many("type"), "sources": many("source"), "tags": many("tag"),
        "tags_mode": q.get("tags_mode", "any"), "task_id": q.get("task_id"),
        "workflow_id": q.get("workflow_id"),
        **{name: number(name) for name in ("created_since", "created_before", "updated_since",
                                           "updated_before")}, **paging}
    if "min_priority" in q:
        text = q["min_priority"]
        fields["min_priority"] = int(text) if text.isdigit() else text
    if "content" in q:
        try:
            fields["content"] = json.loads(q["content"])
        except ValueError:
            raise query_error("content", "must be a JSON object of dotted paths to values, e.g. "
                              '{"audio.language": "en"}') from None
    return ContextFilter(**fields)  # InvalidInput names the field: 400


def refuse_unknown_query(request: Request, known: frozenset[str] | set[str]) -> None:
    unknown = sorted(set(request.query_params) - set(known) - {"access_token"})
    if unknown:
        raise query_error(unknown[0], f"is not a known query parameter (known: "
                          f"{', '.join(sorted(known))})")


def query_error(name: str, problem: str) -> HttpError:
    return HttpError(422, ErrorCode.INVALID_INPUT.value, f"{name}: {problem}",
                     {"field": name, "in": "query"})


def etag(version: int) -> str:
    return f'"{version}"'


def version_of(if_match: str) -> int | None:
    """The version an ``If-Match`` names: ``"7"`` (or a bare 7); ``*`` names none."""
    text = if_match.strip()
    if text == "*":
        return None
    if text.startswith('"') and text.endswith('"') and len(text) >= 2:
        text = text[1:-1]
    if not text.isdigit():
        raise HttpError(400, ErrorCode.INVALID_INPUT.value, "If-Match: must name one version "
                        'as an ETag, e.g. If-Match: "7"', {"field": "If-Match", "in": "header"})
    return int(text)


def ack_json(ack: Any) -> dict[str, Any]:
    return {"item_id": ack.item_id, "version": ack.version, "seq": ack.seq}

