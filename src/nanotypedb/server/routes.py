"""The whole surface of the server in one list, and the ASGI application that serves it."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from ..errors import MethodNotAllowed, NanoTypeDBError, NotFound
from ..service import Service
from . import audit, http, metrics
from .cors import with_cors
from .middleware import RequestIdMiddleware
from .responses import as_public_error, error_response, request_id
from .ws import WebSocketFirst, websocket_endpoint

Endpoint = Callable[[Request], Awaitable[Response]]


async def _on_error(request: Request, exc: Exception) -> Response:
    return error_response(as_public_error(exc, request_id(request)), request_id(request))


def _answered(endpoint: Endpoint) -> Endpoint:
    """Turn every error of an endpoint into the envelope here.

    Starlette sends an `Exception` handler's response from ServerErrorMiddleware and then
    re-raises, so uvicorn logs the error a second time and drops the keep-alive connection:
    the client's next request on it fails with a reset.
    """

    @functools.wraps(endpoint)
    async def answer(request: Request) -> Response:
        try:
            return await endpoint(request)
        except Exception as exc:
            return await _on_error(request, exc)

    return answer


ROUTES = [
    Route("/api/rpc/{name}", _answered(http.rpc), methods=["POST"]),
    Route("/api/functions", _answered(http.functions), methods=["GET"]),
    Route("/api/audit/export", _answered(audit.export_download), methods=["GET"]),
    Route("/openapi.json", _answered(http.openapi_json), methods=["GET"]),
    Route("/healthz", _answered(http.healthz), methods=["GET"]),
    Route("/readyz", _answered(http.readyz), methods=["GET"]),
    Route("/metrics", _answered(metrics.metrics), methods=["GET"]),
    Route("/client.js", _answered(http.client_js), methods=["GET"]),
    WebSocketRoute("/ws", websocket_endpoint),
]


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    error = (
        MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}.")
        if exc.status_code == 405
        else NotFound(f"No route {request.url.path}.")
    )
    return error_response(error, request_id(request))


# uvicorn's sans-I/O WebSocket protocol: measured 5-15 % more round trips per second on one
# connection than its legacy `websockets` protocol, with the same back-pressure on slow readers.
WS_PROTOCOL = "websockets-sansio"


def build_asgi(service: Service) -> WebSocketFirst:
    """The Starlette app for a service, wrapped so that every response carries a request id;
    /ws connections go straight to their session (the route in ROUTES describes it)."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = Starlette(
        routes=ROUTES,
        lifespan=lifespan,
        exception_handlers={
            HTTPException: _on_http_error,
            NanoTypeDBError: _on_error,
            Exception: _on_error,
        },
    )
    app.state.service = service
    app.state.metrics = metrics.Metrics(service)
    return WebSocketFirst(with_cors(RequestIdMiddleware(app), service.config.cors_origins), service)
