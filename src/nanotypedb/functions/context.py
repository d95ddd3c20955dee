"""What a function receives as `ctx`: the caller, `ctx.db`, and for actions a way to call other functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..auth.principal import Principal
from ..errors import Forbidden
from .db import Db
from .registry import FunctionKind


class Caller(Protocol):
    """How an action calls queries and mutations: through the runtime, as the same principal."""

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

    async def run_query(self, name: str, /, **args: Any) -> Any:
        """Call a query as the same caller, from an action."""
        return await self._run(FunctionKind.QUERY, name, args)

    async def run_mutation(self, name: str, /, **args: Any) -> Any:
        """Call a mutation as the same caller, from an action; it commits before this returns."""
        return await self._run(FunctionKind.MUTATION, name, args)

    async def _run(self, kind: FunctionKind, name: str, args: dict[str, Any]) -> Any:
        if self._caller is None:
            raise Forbidden("Only actions can call other functions.")
        return await self._caller.run(self.user, kind, name, args, self.request_id, self.client)
