"""App: what a user declares — tables, functions and migrations — in one object the server runs."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from .errors import ConfigError
from .functions import optimistic as optimistic_hint
from .functions.jobs import JobSpec
from .functions.registry import Function, FunctionKind, Registry, args_model
from .lib.ratelimit import Rate
from .storage.migrations import Migration, check_sequence
from .storage.schema import Table, TableSchema

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T", bound=type[Table])


class App:
    """An application: `app = App("tasks")`, then `@app.table`, `@app.query`, `@app.mutation`, `@app.action`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.functions = Registry()
        self.tables: dict[str, TableSchema] = {}
        self.migrations: list[Migration] = []

    def table(self, cls: T) -> T:
        """Register a Table class with the app (its DDL is applied at start-up)."""
        schema = cls.__schema__
        if schema.name in self.tables:
            raise ConfigError(f"Two tables are named {schema.name!r}.")
        self.tables[schema.name] = schema
        return cls

    def query(
        self, *, name: str | None = None, public: bool = False, rate: str | Rate | None = None
    ) -> Callable[[F], F]:
        """A read-only function over one consistent snapshot."""
        return self._register(FunctionKind.QUERY, name=name, public=public, rate=rate)

    def mutation(
        self,
        *,
        name: str | None = None,
        public: bool = False,
        rate: str | Rate | None = None,
        optimistic: optimistic_hint.Optimistic | str | None = None,
    ) -> Callable[[F], F]:
        """A function whose writes commit together or not at all."""
        return self._register(FunctionKind.MUTATION, name=name, public=public, rate=rate, optimistic=optimistic)

    def action(
        self, *, name: str | None = None, public: bool = False, rate: str | Rate | None = None
    ) -> Callable[[F], F]:
        """A function with side effects outside the database; it calls queries and mutations."""
        return self._register(FunctionKind.ACTION, name=name, public=public, rate=rate)

    def job(
        self,
        name: str | None = None,
        *,
        retries: int = 3,
        timeout: float = 60.0,
        backoff: float = 2.0,
        max_backoff: float = 300.0,
    ) -> Callable[[F], F]:
        """A job handler, `def handler(ctx: JobCtx, payload)` (or `async def`): mutations queue it with
        `ctx.enqueue(name, payload)`; a worker runs it at least once, retrying on failure."""

        def decorate(handler: F) -> F:
            self.functions.add_job(JobSpec(name or handler.__name__, handler, retries, timeout, backoff, max_backoff))
            return handler

        return decorate

    def migration(self, number: int, name: str, sql: str | None = None) -> Any:
        """A numbered migration: `app.migration(8, "...", sql="...")`, or as a decorator on fn(conn)."""
        if sql is not None:
            self._add_migration(Migration(number, name, sql=sql))
            return None

        def decorate(fn: Callable[..., None]) -> Callable[..., None]:
            self._add_migration(Migration(number, name, fn=fn))
            return fn

        return decorate

    def _add_migration(self, migration: Migration) -> None:
        self.migrations = check_sequence([*self.migrations, migration])

    def _register(self, kind: FunctionKind, **options: Any) -> Callable[[F], F]:
        def decorate(handler: F) -> F:
            self.functions.add(_function(kind, handler, **options))
            return handler

        return decorate


def _function(
    kind: FunctionKind,
    handler: Callable[..., Any],
    *,
    name: str | None = None,
    public: bool = False,
    rate: str | Rate | None = None,
    optimistic: optimistic_hint.Optimistic | str | None = None,
) -> Function:
    fname = name or handler.__name__
    if kind is not FunctionKind.ACTION and inspect.iscoroutinefunction(handler):
        raise ConfigError(
            f"{kind.value} {fname!r} is `async def`: queries and mutations run inside one database "
            "transaction and must be plain `def`. Use an action for work that awaits."
        )
    try:
        parsed = Rate.parse(rate) if isinstance(rate, str) else rate
    except ValueError as exc:
        raise ConfigError(f"Function {fname!r}: rate {exc}") from None
    doc = (handler.__doc__ or "").strip()
    hint = optimistic_hint.parse(optimistic, fname)
    return Function(fname, kind, handler, args_model(fname, handler), public, parsed, hint, doc)
