"""What a function receives as `ctx`: the caller, `ctx.db`, and for actions a way to call other functions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from ..auth.principal import Principal
from ..errors import Forbidden, ServiceUnavailable
from .db import Db
from .registry import FunctionKind


class Caller(Protocol):
    """How an action calls queries and mutations: through the runtime, as the same principal."""

    embeddings: Any  # the server's Embeddings, or None when it does not embed
    analytics: Any  # the server's analytics Recorder, or None when analytics are off
    audit_chains: list[tuple[str, Path]]  # the audit chains (name, database file) of this server

    async def run(
        self, principal: Principal, kind: FunctionKind, name: str, args: dict[str, Any], request_id: str, client: str
    ) -> Any: ...


@dataclass(slots=True)
class Ctx:
    """`ctx.user` is the caller; `ctx.db` reads and writes as them (queries and mutations only)."""

    user: Principal
    request_id: str
    _db: Db | None = None
    _caller: Caller | None = None
    client: str = ""

    @property
    def db(self) -> Db:
        if self._db is None:
            raise Forbidden("Actions have no `ctx.db`: call a query or mutation with ctx.run_query / ctx.run_mutation.")
        return self._db

    def enqueue(self, job: str, payload: Any = None, *, delay: float = 0.0) -> int:
        """Queue a job in this mutation's transaction: it runs if and only if the mutation commits."""
        return self.db.enqueue(job, payload, delay=delay)

    async def run_query(self, name: str, /, **args: Any) -> Any:
        """Call a query as the same caller, from an action."""
        return await self._run(FunctionKind.QUERY, name, args)

    async def run_mutation(self, name: str, /, **args: Any) -> Any:
        """Call a mutation as the same caller, from an action; it commits before this returns."""
        return await self._run(FunctionKind.MUTATION, name, args)

    async def search(self, table: str, query: str | list[float], k: int = 10) -> list[dict[str, Any]]:
        """From an action: the `k` rows of an embedded table most similar to `query` (a text or a vector)
        that the caller may read, best first, each with its `_score`."""
        return list(await self._embeddings().search(self.user, table, query, k))

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """From an action: unit vectors for `texts`, through the server's AI gateway (cached)."""
        return [list(map(float, v)) for v in await self._embeddings().embed(texts)]

    def _embeddings(self) -> Any:
        embeddings = self._caller.embeddings if self._caller is not None else None
        if embeddings is None:
            if self._caller is None:
                raise Forbidden("Only actions can search and embed: queries and mutations cannot wait for a model.")
            raise ServiceUnavailable("This server does not embed: it has no embedded table or no provider.")
        return embeddings

    async def _run(self, kind: FunctionKind, name: str, args: dict[str, Any]) -> Any:
        if self._caller is None:
            raise Forbidden("Only actions can call other functions.")
        return await self._caller.run(self.user, kind, name, args, self.request_id, self.client)
