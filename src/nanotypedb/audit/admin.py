"""Admin functions of the audit log: `exportAuditLog` (bounded; the download streams more) and `verifyAuditLog`."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any, Literal

from ..app import _function
from ..errors import AuditExportTooLarge, Forbidden
from ..functions.context import Ctx
from ..functions.registry import Function, FunctionKind
from ..storage import audit as store
from . import export
from .verify import verify_chains

# A call's result is held in memory and sent in one message: past this, the streamed download.
MAX_EXPORT_ENTRIES = 10_000
Format = Literal["json", "csv"]


def _admin(ctx: Ctx) -> None:
    if not ctx.user.is_admin:
        raise Forbidden("Only an admin key may read the audit log.")


def export_audit_log(
    ctx: Ctx,
    format: Format = "json",  # the seed's argument name (it shadows a builtin): part of the public API
    since: str | None = None,
    until: str | None = None,
    actor: str | None = None,
    table: str | None = None,
) -> Any:
    """Audit entries, oldest first: a list of entries (json) or the text of a CSV file (csv).
    `since` <= time < `until` (ISO 8601), `actor` (`kind:id` or an id), `table` narrow them."""
    _admin(ctx)
    where = store.Filter.parse(since, until, actor, table)
    rows = store.page(ctx.db._tx.conn, where, 0, MAX_EXPORT_ENTRIES + 1)
    if len(rows) > MAX_EXPORT_ENTRIES:
        url = export.download_url(format, since=since, until=until, actor=actor, table=table)
        raise AuditExportTooLarge(
            f"More than {MAX_EXPORT_ENTRIES} entries match: narrow since/until/actor/table, or download "
            f"them all from GET {url} (streamed).",
            details={"limit": MAX_EXPORT_ENTRIES, "download": url},
        )
    if format == "csv":
        return export.encode("csv", rows).decode()
    return [store.as_dict(row) for row in rows]


async def verify_audit_log(ctx: Ctx) -> dict[str, Any]:
    """Check every entry of this server's audit chains (its environment's, and the system's, which
    records API keys): `{"ok", "chains": [{"chain", "ok", "entries", "head", "problems"}]}`."""
    _admin(ctx)
    chains = ctx._caller.audit_chains if ctx._caller is not None else []
    # Off the event loop: a long chain takes seconds to hash through.
    return await asyncio.to_thread(verify_chains, chains)


def functions() -> list[Function]:
    return [
        dataclasses.replace(_function(FunctionKind.QUERY, export_audit_log, name="exportAuditLog"), cacheable=False),
        _function(FunctionKind.ACTION, verify_audit_log, name="verifyAuditLog"),
    ]
