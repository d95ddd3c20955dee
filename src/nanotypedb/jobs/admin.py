"""Admin functions over the queue: `listJobs`, `redriveJobs` and `purgeJobs`, for admin keys only."""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from ..app import _function
from ..errors import Forbidden
from ..functions.context import Ctx
from ..functions.registry import Function, FunctionKind
from ..storage import jobs as store

Status = Literal["pending", "running", "dead"]


def _conn(ctx: Ctx) -> Any:
    if not ctx.user.is_admin:
        raise Forbidden("Only an admin key may manage jobs.")
    return ctx.db._tx.conn


def list_jobs(ctx: Ctx, status: Status | None = None, queue: str | None = None, limit: int = 100) -> dict[str, Any]:
    """Jobs still in the queue (done ones leave it), oldest first, with each one's error history;
    and how many there are of each status."""
    conn = _conn(ctx)
    jobs = store.listing(conn, status, queue, max(1, min(limit, 1000)))
    return {"jobs": [j.to_dict() for j in jobs], "counts": store.counts(conn)}


def redrive_jobs(ctx: Ctx, ids: list[int] | None = None, queue: str | None = None) -> dict[str, int]:
    """Run dead jobs again (those with these ids, or of this queue, or all), with a fresh count of attempts."""
    count = store.redrive(_conn(ctx), ids, queue)
    ctx.db._tx.act("jobs.redrive", "_jobs", after={"ids": ids, "queue": queue, "count": count})
    return {"redriven": count}


def purge_jobs(ctx: Ctx, status: Status = "dead", queue: str | None = None) -> dict[str, int]:
    """Delete jobs of one status (dead by default), of one queue or all."""
    count = store.purge(_conn(ctx), status, queue)
    ctx.db._tx.act("jobs.purge", "_jobs", after={"status": status, "queue": queue, "count": count})
    return {"purged": count}


def functions() -> list[Function]:
    return [
        dataclasses.replace(_function(FunctionKind.QUERY, list_jobs, name="listJobs"), cacheable=False),
        _function(FunctionKind.MUTATION, redrive_jobs, name="redriveJobs"),
        _function(FunctionKind.MUTATION, purge_jobs, name="purgeJobs"),
    ]
