"""`getAnalytics(from, to, bucket, group_by)`: the admin function a dashboard reads usage from."""

from __future__ import annotations

from typing import Any

import pydantic

from ..errors import Forbidden, ServiceUnavailable
from ..functions.context import Ctx
from ..functions.registry import Function, FunctionKind
from . import query

NAME = "getAnalytics"
Time = str | float  # ISO-8601, or Unix seconds


class Arguments(pydantic.BaseModel):
    """The arguments as callers write them: `from` and `to` are Python keywords, so the fields are aliased."""

    model_config = pydantic.ConfigDict(strict=True, extra="forbid")

    start: Time | None = pydantic.Field(None, alias="from", description="Start, inclusive (default: `to` - 24 h).")
    end: Time | None = pydantic.Field(None, alias="to", description="End, exclusive (default: now).")
    bucket: str = pydantic.Field("1h", description="Width of each point: '1m', '15m', '1h', '1d', ...")
    group_by: str | list[str] = pydantic.Field(
        "function", description="function, caller, status (calls) or table, action (rows changed), or a list of them."
    )


async def get_analytics(
    ctx: Ctx, start: Time | None, end: Time | None, bucket: str, group_by: str | list[str]
) -> dict[str, Any]:
    """Calls (count, errors, latency avg/p50/p95/p99/max in ms) or rows changed, per bucket of time,
    grouped by function, caller, status, table or action; includes the counts not yet flushed."""
    if not ctx.user.is_admin:
        raise Forbidden("Only an admin key may read analytics.")
    recorder = ctx._caller.analytics if ctx._caller is not None else None
    if recorder is None:
        raise ServiceUnavailable("Analytics are off on this server: start it with `--analytics on` to count calls.")
    request = query.parse(start, end, bucket, group_by, recorder.clock())
    result: dict[str, Any] = await recorder.read(request)
    return result


def functions() -> list[Function]:
    return [
        Function(NAME, FunctionKind.ACTION, get_analytics, Arguments, description=(get_analytics.__doc__ or "").strip())
    ]
