"""JSON responses and the one error envelope, with the request id on every response."""

from __future__ import annotations

import logging
import math
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from ..errors import InternalError, NanoTypeDBError, RateLimited
from ..protocol import dumps

log = logging.getLogger(__name__)
REQUEST_ID_HEADER = "x-request-id"


def request_id(request: Request) -> str:
    return str(request.scope.get("request_id", ""))


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status, headers, media_type="application/json")


def error_response(exc: NanoTypeDBError, rid: str) -> Response:
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimited):
        headers["retry-after"] = str(max(1, math.ceil(exc.retry_after)))
    return json_response({"error": exc.to_dict(rid)}, exc.status, headers)


def as_public_error(exc: BaseException, rid: str) -> NanoTypeDBError:
    """Known errors pass through; anything else is logged here and becomes a bare InternalError."""
    if isinstance(exc, NanoTypeDBError):
        return exc
    log.error("unhandled error [%s]", rid, exc_info=exc)
    return InternalError(f"An internal error occurred (request {rid}); the server log has the details.")
