"""What every request passes before a route: the bearer token and the body limit.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware, which costs a
task per request). The token is compared in constant time. A body is refused
with 413 from its Content-Length before a byte of it is read, and a body sent
without one is counted as it arrives.
"""
from __future__ import annotations

import hmac
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qsl

from .errors import HttpError, error_response

OPEN_PATHS = frozenset({"/livez"})  # a liveness probe carries no credentials
TOKEN_QUERY = "access_token"         # RFC 6750 2.3: for a browser's page and its event stream

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def presented_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            return credentials.strip() if scheme.lower() == "bearer" else None
    query = scope.get("query_string", b"")
    if TOKEN_QUERY.encode() in query:
        return dict(parse_qsl(query.decode("latin-1"))).get(TOKEN_QUERY)
    return None


def token_matches(expected: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())


class Guard:
    def __init__(self, app: Callable, token: str | None, max_body_bytes: int):
        self.app = app
        self.token = token
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.token is not None and scope["path"] not in OPEN_PATHS \
                and not token_matches(self.token, presented_token(scope)):
            await self._refuse(scope, receive, send, HttpError(
                401, "UNAUTHORIZED", "this route needs the bearer token (Authorization: Bearer "
                "TOKEN)", headers={"WWW-Authenticate": 'Bearer realm="grym"'}))
            return
        length = _content_length(scope)
        if length is not None and length > self.max_body_bytes:
            await self._refuse(scope, receive, send, self.too_large(length))
            return
        await self.app(scope, self._counting(receive), send)

    def too_large(self, size: int | None = None) -> HttpError:
        said = f"{size} bytes" if size is not None else "the body"
        return HttpError(413, "PAYLOAD_TOO_LARGE", f"{said} is over the limit of "
                         f"{self.max_body_bytes} bytes (http.max_body_bytes)",
                         {"max_body_bytes": self.max_body_bytes})

    def _counting(self, receive: Receive) -> Receive:
        received = 0

        async def counted() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise self.too_large()
            return message
        return counted

    @staticmethod
    async def _refuse(scope: Scope, receive: Receive, send: Send, error: HttpError) -> None:
        # Answer at once, without reading the body; the server closes the
        # connection rather than read what the client still sends.
        await error_response(error)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
