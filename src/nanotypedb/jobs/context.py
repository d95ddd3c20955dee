"""JobCtx: what a job handler receives — the job, and reads and writes as the system, past row-level security."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..auth.principal import Principal, PrincipalKind
from ..functions.db import Db
from ..functions.jobs import JobSpec
from ..storage.audit import Origin
from ..storage.engine import SqliteEngine
from ..storage.transaction import Transaction

T = TypeVar("T")
# Jobs act for the app itself, not for whoever queued them: like an admin key, past row-level security.
SYSTEM = Principal(PrincipalKind.ADMIN, "jobs")


@dataclass(slots=True)
class JobCtx:
    """`ctx.payload`, `ctx.attempt` (1 on the first run); `await ctx.write(fn)` / `ctx.write_sync(fn)` run
    `fn(db)` in one write transaction (a versioned commit, seen by live queries); `ctx.read` likewise."""

    job_id: int
    queue: str
    attempt: int
    payload: Any
    _engine: SqliteEngine
    _jobs: Mapping[str, JobSpec]
    services: dict[str, Any] = field(default_factory=dict)  # what the server offers handlers, e.g. "ai"

    @property
    def user(self) -> Principal:
        return SYSTEM

    async def write(self, fn: Callable[[Db], T]) -> T:
        """Run `fn(db)` in a write transaction; `db.enqueue` queues follow-up jobs atomically with it."""
        return (await self._engine.write(lambda tx: fn(self._db(tx)))).value

    def write_sync(self, fn: Callable[[Db], T]) -> T:
        """`write` for a plain `def` handler, which runs in a worker thread."""
        return self._engine.write_sync(lambda tx: fn(self._db(tx))).value

    def _db(self, tx: Transaction) -> Db:
        # The audit log names the system as the actor, the handler as the function, the job as the request.
        tx.origin = Origin("system", SYSTEM.id or "jobs", self.queue, f"job-{self.job_id}-{self.attempt}")
        return Db(tx, SYSTEM, self._jobs)

    async def read(self, fn: Callable[[Db], T]) -> T:
        return (await self._engine.read(lambda tx: fn(Db(tx, SYSTEM, self._jobs)))).value

    def read_sync(self, fn: Callable[[Db], T]) -> T:
        return self._engine.read_sync(lambda tx: fn(Db(tx, SYSTEM, self._jobs))).value
