"""GET /api/audit/export: the whole audit log (or a filtered part) as a streamed download, for admin keys."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ..audit import export
from ..errors import Forbidden, Unauthenticated
from ..storage import audit as store
from .http import bearer, service_of


async def export_download(request: Request) -> Response:
    """Entries oldest first as CSV, a JSON array or NDJSON, read page by page while they are sent."""
    service = service_of(request)
    principal = service.authenticate(bearer(request.headers.get("authorization")))
    if principal.is_anonymous:
        raise Unauthenticated("The audit log export needs an admin key: send `Authorization: Bearer <key>`.")
    if not principal.is_admin:
        raise Forbidden("Only an admin key may export the audit log.")
    params = request.query_params
    fmt = export.parse_format(params.get("format"))
    where = store.Filter.parse(params.get("since"), params.get("until"), params.get("actor"), params.get("table"))
    engine = service.engine

    async def fetch(after: int, limit: int) -> list[tuple[Any, ...]]:
        # Each page is a snapshot of its own, read in a thread: a long download neither blocks the
        # event loop nor holds one read transaction open (which would stop WAL checkpoints).
        read = await asyncio.to_thread(engine.read_sync, lambda tx: store.page(tx.conn, where, after, limit))
        return read.value

    name = f"audit-{service.environment.name}.{fmt}"
    return StreamingResponse(
        export.stream_async(fmt, fetch),
        media_type=export.MEDIA_TYPES[fmt],
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )
