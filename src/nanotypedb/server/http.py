"""HTTP handlers: call a function, list functions, describe the API, report health and readiness, serve client.js."""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

from .. import protocol
from ..errors import PayloadTooLarge, ServiceUnavailable, Unauthenticated
from ..functions.registry import Function
from ..service import Service
from .openapi import openapi
from .responses import json_response, request_id


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def bearer(authorization: str | None) -> str | None:
    """The credential of an `Authorization: Bearer …` header."""
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthenticated("Send credentials as `Authorization: Bearer <token or API key>`.")
    return credential.strip()


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is {declared} bytes; the limit is {limit}.")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body is larger than the limit of {limit} bytes.")
        chunks.append(chunk)
    return b"".join(chunks)


def visible_functions(request: Request) -> list[Function]:
    """Signed-in callers see every function; anonymous ones only the public functions."""
    service = service_of(request)
    principal = service.authenticate(bearer(request.headers.get("authorization")))
    return [f for f in service.app.functions if f.public or not principal.is_anonymous]


async def rpc(request: Request) -> Response:
    """POST /api/rpc/{name}: JSON arguments in, `{"data", "version"}` out."""
    service = service_of(request)
    body = await read_body(request, service.config.max_body_bytes)
    principal = service.authenticate(bearer(request.headers.get("authorization")))
    client = request.client.host if request.client else ""
    result = await service.runtime.call(
        principal, request.path_params["name"], body, request_id=request_id(request), client=client
    )
    return Response(protocol.http_result(result.encoded, result.version), media_type="application/json")


async def functions(request: Request) -> Response:
    """GET /api/functions: each function the caller may see, with its kind and argument JSON Schema."""
    tables = request.app.state.service.app.tables
    return json_response({"functions": [f.describe(tables) for f in visible_functions(request)]})


async def openapi_json(request: Request) -> Response:
    service = service_of(request)
    return json_response(openapi(service.app, visible_functions(request)))


async def healthz(request: Request) -> Response:
    """GET /healthz: the process is up and answering."""
    return json_response({"status": "ok", "version": service_of(request).engine.version})


async def readyz(request: Request) -> Response:
    """GET /readyz: 200 when the databases are open and the job workers run, else 503 naming what is not."""
    service = service_of(request)
    checks = service.readiness()
    waiting = sorted(name for name, ok in checks.items() if not ok)
    if waiting:
        raise ServiceUnavailable(f"Not ready: {', '.join(waiting)}.", details={"checks": checks})
    body = {"status": "ready", "environment": service.environment.name, "checks": checks}
    return json_response({**body, "version": service.engine.version})


# The browser client ships inside the package (src/nanotypedb/web/), so a wheel serves it too.
WEB_DIR = Path(__file__).resolve().parent.parent / "web"


@functools.cache
def _client_js() -> tuple[bytes, str]:
    body = (WEB_DIR / "client.js").read_bytes()
    return body, f'"{hashlib.sha256(body).hexdigest()[:32]}"'


async def client_js(request: Request) -> Response:
    """GET /client.js: the browser client, an ES module. Its URL has no version, so browsers
    revalidate it on each load (`no-cache`) and get a 304 while its ETag still matches."""
    body, etag = _client_js()
    headers = {"etag": etag, "cache-control": "no-cache"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="text/javascript; charset=utf-8", headers=headers)
