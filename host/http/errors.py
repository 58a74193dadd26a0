"""Typed errors -> HTTP statuses, and the one error body every route answers with.

    {"error": {"code": "OVERLOADED", "message": "...", "details": {...}}}

The runtime's ErrorCodes map to the statuses an HTTP client expects; the
errors that only HTTP has (a body over the limit, a missing token, a failed
``If-Match``) are ``HttpError``s with codes of their own.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse

from messages.errors import ErrorCode, ErrorInfo, GrymError

STATUS_BY_CODE: Mapping[ErrorCode, int] = {
    ErrorCode.INVALID_INPUT: 400,
    ErrorCode.INVALID_TASK_TYPE: 400,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.SERVICE_NOT_FOUND: 404,
    ErrorCode.CONFLICT: 409,
    ErrorCode.OVERLOADED: 429,
    ErrorCode.EXECUTION_ERROR: 500,
    ErrorCode.CONFIG_ERROR: 500,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.SHUTTING_DOWN: 503,
    ErrorCode.INIT_ERROR: 503,      # the service could not load its model
    ErrorCode.TIMEOUT: 504,
}
RETRY_AFTER_S = 1  # OVERLOADED: a queue slot frees as soon as one task ends


class HttpError(HTTPException):
    """An error of the HTTP layer itself: its own status and code.

    An HTTPException, so that one raised while FastAPI reads a body (the size
    limit) keeps its status instead of becoming FastAPI's generic 400."""

    def __init__(self, status: int, code: str, message: str,
                 details: Mapping[str, Any] | None = None,
                 headers: Mapping[str, str] | None = None):
        super().__init__(status, message, dict(headers or {}))
        self.status, self.code, self.message = status, code, message
        self.details = dict(details or {})


# Starlette's own refusals (no such route, wrong method) in the same shape.
CODE_BY_STATUS = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE",
                  415: "UNSUPPORTED_MEDIA_TYPE"}


def from_starlette(exc: HTTPException) -> "HttpError":
    if isinstance(exc, HttpError):
        return exc
    return HttpError(exc.status_code, CODE_BY_STATUS.get(exc.status_code, "HTTP_ERROR"),
                     str(exc.detail), headers=exc.headers)


def body(code: str, message: str, details: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": dict(details or {})}}


def status_of(code: ErrorCode | str) -> int:
    try:
        return STATUS_BY_CODE[ErrorCode(code)]
    except ValueError:
        return 500


def headers_for(code: ErrorCode | str) -> dict[str, str]:
    return {"Retry-After": str(RETRY_AFTER_S)} if code == ErrorCode.OVERLOADED else {}


def error_response(error: ErrorInfo | GrymError | HttpError, status: int | None = None,
                   extra: Mapping[str, Any] | None = None) -> JSONResponse:
    """The error body for a runtime error (status from its code) or an HTTP one.

    ``status`` overrides the mapping (412 for a CONFLICT under ``If-Match``);
    ``extra`` adds top-level members (a failed task's id and timings)."""
    if isinstance(error, HttpError):
        return JSONResponse({**body(error.code, error.message, error.details), **(extra or {})},
                            status_code=status or error.status, headers=error.headers)
    info = error.info() if isinstance(error, GrymError) else error
    content = {**body(info.code.value, info.message, _plain(info.details)), **(extra or {})}
    return JSONResponse(content, status_code=status or status_of(info.code),
                        headers=headers_for(info.code))


def validation_error(errors: Iterable[Mapping[str, Any]], where: str = "body") -> HttpError:
    """Pydantic's errors as one INVALID_INPUT: 400 for malformed JSON, else 422,
    the message naming the first field and the details listing every one."""
    fields = []
    malformed = None
    for error in errors:
        loc = [str(part) for part in error.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            where, loc = loc[0], loc[1:]
        if error.get("type") == "json_invalid":
            malformed = error.get("ctx", {}).get("error") or error.get("msg", "invalid JSON")
            continue
        problem = error.get("msg", "is not valid")
        if error.get("type") == "extra_forbidden":
            problem = "is not a known field"
        fields.append({"field": ".".join(loc) or where, "in": where, "problem": problem})
    if malformed is not None:
        return HttpError(400, ErrorCode.INVALID_INPUT.value, f"the {where} is not valid JSON: "
                         f"{malformed}", {"in": where})
    first = fields[0] if fields else {"field": where, "problem": "is not valid"}
    return HttpError(422, ErrorCode.INVALID_INPUT.value, f"{first['field']}: {first['problem']}",
                     {"field": first["field"], "errors": fields})


def _plain(details: Mapping[str, Any]) -> dict[str, Any]:
    """Details as JSON can hold them (they may carry tuples, sets or odd objects)."""
    out: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, (str, int, float, bool)) or value is None:
            out[str(key)] = value
        elif isinstance(value, (list, tuple, set, frozenset)):
            out[str(key)] = [v if isinstance(v, (str, int, float, bool)) else str(v) for v in value]
        else:
            out[str(key)] = str(value)
    return out
