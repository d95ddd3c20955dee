"""`ctx.db`: the only door from a function to data, with row-level security applied to every read and write."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..auth.policy import Policy, Rule
from ..auth.principal import Principal
from ..errors import Forbidden, PolicyDenied, RowNotFound, ValidationFailed
from ..protocol import dumps
from ..storage.query import (
    Condition,
    Select,
    compare,
    cursor_condition,
    encode_cursor,
    parse_order,
)
from ..storage.schema import TableSchema
from ..storage.transaction import Transaction
from ..vectors import store as vector_store
from . import embedding
from .jobs import JobSpec

MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a paginated query; pass `cursor` back to get the next one."""

    items: list[dict[str, Any]]
    cursor: str | None
    is_done: bool

    def to_dict(self) -> dict[str, Any]:
        return {"items": self.items, "cursor": self.cursor, "is_done": self.is_done}


class Db:
    """Reads and writes as the caller: admins bypass policies, everyone else goes through them."""

    def __init__(self, tx: Transaction, principal: Principal, jobs: Mapping[str, JobSpec] | None = None) -> None:
        self._tx = tx
        self.principal = principal
        self._jobs = jobs or {}

    def enqueue(self, job: str, payload: Any = None, *, delay: float = 0.0) -> int:
        """Queue job `job` with a JSON payload, in this transaction: it runs if and only if the
        write commits. Returns the job's id."""
        spec = self._jobs.get(job)
        if spec is None:
            raise ValueError(f"No job handler is named {job!r}; declare one with @app.job(name={job!r}).")
        return self._tx.enqueue(job, dumps(payload), spec.max_attempts, delay)

    def query(self, table: str) -> Query:
        schema = self._tx.table(table)
        return Query(self, schema, self._guard(schema, "read"))

    def get(self, table: str, row_id: int) -> dict[str, Any] | None:
        schema = self._tx.table(table)
        row = self._tx.get(schema, row_id, self._guard(schema, "read"))
        return row if row is None or self._passes(schema, "read", row) else None

    def insert(self, table: str, values: Mapping[str, Any]) -> dict[str, Any]:
        schema = self._writable(table)
        values = dict(values)
        if not self.principal.is_admin:
            values = self._policy(schema, "insert").prepare_insert(self.principal, values)
        embeds = self._embeds(schema)
        if embeds:
            values[embedding.STATUS] = "pending"
        row = self._tx.insert(schema, values)
        if embeds:
            self._queue_embedding(schema, row)
        return row

    def update(self, table: str, row_id: int, values: Mapping[str, Any]) -> dict[str, Any]:
        schema = self._writable(table)
        changes = dict(values)
        guard = self._guard(schema, "update")
        if not self.principal.is_admin:
            before = self._visible_row(schema, row_id, guard, "update")
            self._policy(schema, "update").check_update(self.principal, before, changes)
        result = self._tx.update(schema, row_id, changes, guard)
        if result is None:
            raise RowNotFound(f"No row {row_id} in {table!r} that you may update.")
        before, after = result
        if self._embeds(schema) and embedding.content_hash(schema, before) != embedding.content_hash(schema, after):
            # New content: the vector is stale from now on, and a job computes the next one.
            refreshed = self._tx.update(schema, row_id, {embedding.STATUS: "pending"})
            after = refreshed[1] if refreshed is not None else after
            self._queue_embedding(schema, after)
        return after

    def delete(self, table: str, row_id: int) -> dict[str, Any]:
        schema = self._writable(table)
        guard = self._guard(schema, "delete")
        if not self.principal.is_admin:
            self._visible_row(schema, row_id, guard, "delete")
        before = self._tx.delete(schema, row_id, guard)
        if before is None:
            raise RowNotFound(f"No row {row_id} in {table!r} that you may delete.")
        if embedding.columns(schema):
            vector_store.delete(self._tx.conn, table, row_id)
        return before

    def _embeds(self, schema: TableSchema) -> bool:
        """Whether writes to this table queue embeddings (it is embedded, and the server embeds)."""
        return bool(embedding.columns(schema)) and embedding.EMBED_JOB in self._jobs

    def _queue_embedding(self, schema: TableSchema, row: Mapping[str, Any]) -> None:
        payload = {"table": schema.name, "id": row["id"], "hash": embedding.content_hash(schema, row)}
        self.enqueue(embedding.EMBED_JOB, payload)

    def count(self, table: str, **where: Any) -> int:
        return self.query(table).where(**where).count()

    # -- policy plumbing --------------------------------------------------------

    def _writable(self, table: str) -> TableSchema:
        if not self._tx.writable:
            raise Forbidden("A query cannot write: make this function a mutation.")
        return self._tx.table(table)

    def _policy(self, schema: TableSchema, action: str) -> Policy:
        policy = schema.policy
        if not isinstance(policy, Policy):
            raise PolicyDenied(f"Table {schema.name!r} has no policy, so only admins may {action} it.")
        return policy

    def _rules(self, schema: TableSchema, action: str) -> tuple[Rule, ...]:
        """A row one may update or delete must also be one one may read: an update returns the row."""
        policy = self._policy(schema, action)
        rule: Rule = getattr(policy, action)
        return (policy.read, rule) if action in ("update", "delete") else (rule,)

    def _guard(self, schema: TableSchema, action: str) -> tuple[Condition, ...]:
        if self.principal.is_admin:
            return ()
        return tuple(rule.condition(self.principal) for rule in self._rules(schema, action))

    def _passes(self, schema: TableSchema, action: str, row: Mapping[str, Any]) -> bool:
        if self.principal.is_admin:
            return True
        return all(
            rule.predicate is None or bool(rule.predicate(self.principal, row)) for rule in self._rules(schema, action)
        )

    def _visible_row(
        self, schema: TableSchema, row_id: int, guard: tuple[Condition, ...], action: str
    ) -> dict[str, Any]:
        row = self._tx.get(schema, row_id, guard)
        if row is None or not self._passes(schema, action, row):
            raise RowNotFound(f"No row {row_id} in {schema.name!r} that you may {action}.")
        return dict(row)


@dataclass(frozen=True, slots=True)
class Query:
    """A read being built: `db.query("tasks").where(status="pending").order_by("-id").limit(20).all()`."""

    db: Db
    table: TableSchema
    guard: tuple[Condition, ...]
    filters: tuple[Condition, ...] = ()
    order: tuple[tuple[str, bool], ...] = ()
    max_rows: int | None = None

    def _with(self, **changes: Any) -> Query:
        # dataclasses.replace inspects the fields on every call; queries are built per request.
        return Query(
            self.db,
            self.table,
            self.guard,
            changes.get("filters", self.filters),
            changes.get("order", self.order),
            changes.get("max_rows", self.max_rows),
        )

    def where(self, **equals: Any) -> Query:
        conds = tuple(compare(self.table, col, "=", val) for col, val in equals.items())
        return self._with(filters=self.filters + conds)

    def filter(self, column: str, op: str, value: Any) -> Query:
        return self._with(filters=(*self.filters, compare(self.table, column, op, value)))

    def order_by(self, *columns: str) -> Query:
        return self._with(order=tuple(parse_order(self.table, c) for c in columns))

    def limit(self, n: int) -> Query:
        if not 0 <= n <= MAX_LIMIT:
            raise ValidationFailed(f"limit must be between 0 and {MAX_LIMIT}, got {n}.")
        return self._with(max_rows=n)

    def all(self) -> list[dict[str, Any]]:
        return self._rows()

    def first(self) -> dict[str, Any] | None:
        rows = self._with(max_rows=1).all()
        return rows[0] if rows else None

    def count(self) -> int:
        if self._predicate() is not None:
            return len(self._with(max_rows=None).all())
        return self.db._tx.count(self._select())

    def paginate(self, limit: int = 50, cursor: str | None = None) -> Page:
        """Keyset pagination: stable under concurrent inserts, and every page passes RLS again."""
        order = self._keyset_order()
        extra = (cursor_condition(order, cursor),) if cursor else ()
        rows = self._with(order=order).limit(limit)._rows(extra)
        done = len(rows) < limit
        next_cursor = None if done or not rows else encode_cursor(rows[-1], order, self.table)
        return Page(rows, next_cursor, done)

    def _keyset_order(self) -> tuple[tuple[str, bool], ...]:
        order = self.order or (("id", False),)
        for col, _ in order:
            if col != "id" and self.table.columns[col].nullable:
                raise ValidationFailed(f"Cannot paginate by nullable column {col!r}.")
        if order[-1][0] != "id":
            order = (*order, ("id", order[-1][1]))
        return order

    def _select(self) -> Select:
        view = tuple(c.eq for c in self.filters if c.eq is not None)
        return Select(self.table, self.guard + self.filters, self.order, self.max_rows, view)

    def _predicate(self) -> Any:
        if self.db.principal.is_admin or not isinstance(self.table.policy, Policy):
            return None
        return self.table.policy.read.predicate

    def _rows(self, extra: tuple[Condition, ...] = ()) -> list[dict[str, Any]]:
        """At most `max_rows` rows the caller may see, `extra` conditions included.

        A predicate rule runs after the SQL, so with one the SQL reads without its LIMIT: a LIMIT
        before the predicate would count rows the predicate then drops, and cut pages short.
        """
        select = self._select()
        select = replace(select, conditions=select.conditions + extra)
        pred = self._predicate()
        if pred is None:
            return self.db._tx.select(select)
        rows = [r for r in self.db._tx.select(replace(select, limit=None)) if pred(self.db.principal, r)]
        return rows if self.max_rows is None else rows[: self.max_rows]
