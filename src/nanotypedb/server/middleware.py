"""ASGI middleware: give every request an id and put it on every response."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..lib.ids import request_id
from ..lib.logs import REQUEST_ID
from .responses import REQUEST_ID_HEADER


class RequestIdMiddleware:
    """Sets scope["request_id"] and adds an `x-request-id` header to HTTP responses."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = request_id()
        scope["request_id"] = rid
        token = REQUEST_ID.set(rid) if scope["type"] == "http" else None  # a socket's calls set their own
        header = (REQUEST_ID_HEADER.encode(), rid.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if token is not None:
                REQUEST_ID.reset(token)
