"""A transaction over one connection: typed reads and writes that record a ReadSet and a WriteLog."""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import Forbidden, NotFound
from . import jobs
from .audit import UNKNOWN, Act, Origin
from .query import Condition, Select
from .reads import ReadSet
from .schema import TableSchema, quote

Op = Literal["insert", "update", "delete"]


@dataclass(frozen=True, slots=True)
class Change:
    """One row written: its table, the operation, and the row before and after."""

    table: str
    op: Op
    id: int
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class Transaction:
    """The storage half of `ctx.db`: every method takes already-compiled conditions (RLS included)."""

    def __init__(self, conn: sqlite3.Connection, tables: Mapping[str, TableSchema], *, writable: bool) -> None:
        self.conn = conn
        self.tables = tables
        self.writable = writable
        self.read_set = ReadSet()
        self.changes: list[Change] = []
        self.enqueued = 0  # jobs written in this transaction (the commit wakes the workers)
        self.origin: Origin = UNKNOWN  # who writes: the audit log's actor, function, request and client
        self.acts: list[Act] = []  # administrative acts to audit beside the row changes

    def act(self, action: str, table: str | None, row_id: Any = None, after: Mapping[str, Any] | None = None) -> None:
        """Record an administrative act (a re-drive, a purge) for the audit log of this transaction."""
        self.acts.append(Act(action, table, row_id, None, after))

    def table(self, name: str) -> TableSchema:
        schema = self.tables.get(name)
        if schema is None:
            raise NotFound(f"There is no table {name!r}.")
        return schema

    def select(self, select: Select) -> list[dict[str, Any]]:
        name = select.table.name
        self.read_set.add(name, select.equality_filters())
        self.read_set.view(name, "rows", dict(select.view_filters), select.order, select.limit)
        sql, params = select.sql()
        return self._rows(select.table, sql, params)

    def count(self, select: Select) -> int:
        # A count depends only on which rows match: an edit of another column cannot change it.
        name = select.table.name
        self.read_set.add(name, select.equality_filters(), select.condition_columns())
        self.read_set.view(name, "count", dict(select.view_filters))
        sql, params = select.count_sql()
        return int(self.conn.execute(sql, params).fetchone()[0])

    def get(self, table: TableSchema, row_id: int, conditions: Sequence[Condition] = ()) -> dict[str, Any] | None:
        self.read_set.add(table.name, {"id": row_id})
        self.read_set.view(table.name, "get", {"id": row_id})
        select = Select(table, (Condition('"id" = ?', (row_id,), cols=frozenset(("id",))), *conditions), limit=None)
        sql, params = select.sql()
        rows = self._rows(table, sql, params)
        return rows[0] if rows else None

    def insert(self, table: TableSchema, values: Mapping[str, Any]) -> dict[str, Any]:
        row = table.encode_insert(values)
        if "id" in values:
            row = {"id": values["id"], **row}
        cur = self.conn.execute(_insert_sql(table.name, tuple(row)), tuple(row.values()))
        # Every column was filled in Python, so the stored row is known without reading it back.
        after = {"id": cur.lastrowid, **row}
        for name, decode in table.decoders(tuple(after)):
            if after[name] is not None:
                after[name] = decode(after[name])
        self.changes.append(Change(table.name, "insert", after["id"], None, after))
        return after

    def update(
        self,
        table: TableSchema,
        row_id: int,
        values: Mapping[str, Any],
        conditions: Sequence[Condition] = (),
    ) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Returns (before, after), or None when no row with that id passes the conditions."""
        before = self.get(table, row_id, conditions)
        if before is None:
            return None
        encoded = table.encode_update(values)
        if not encoded:
            return before, before
        sets = ", ".join(f"{quote(c)} = ?" for c in encoded)
        sql = f'UPDATE {quote(table.name)} SET {sets} WHERE "id" = ? RETURNING *'
        after = self._rows(table, sql, [*encoded.values(), row_id])[0]
        self.changes.append(Change(table.name, "update", row_id, before, after))
        return before, after

    def delete(self, table: TableSchema, row_id: int, conditions: Sequence[Condition] = ()) -> dict[str, Any] | None:
        before = self.get(table, row_id, conditions)
        if before is None:
            return None
        self.conn.execute(f'DELETE FROM {quote(table.name)} WHERE "id" = ?', (row_id,))
        self.changes.append(Change(table.name, "delete", row_id, before, None))
        return before

    def enqueue(self, queue: str, payload: bytes, max_attempts: int, delay: float = 0.0) -> int:
        """Write a job into this transaction: it exists exactly if the transaction commits."""
        if not self.writable:
            raise Forbidden("Jobs are enqueued from mutations (and job handlers' writes), not from queries.")
        job_id = jobs.enqueue(self.conn, queue, payload, max_attempts, delay)
        self.enqueued += 1
        return job_id

    def _rows(self, table: TableSchema, sql: str, params: Sequence[Any]) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, params)
        names = tuple(d[0] for d in cur.description)
        rows = [dict(zip(names, r)) for r in cur.fetchall()]  # noqa: B905 (same length by construction)
        # Column by column: one Python loop per column that needs decoding, not per cell.
        for name, decode in table.decoders(names):
            for row in rows:
                value = row[name]
                if value is not None:
                    row[name] = decode(value)
        return rows


@functools.lru_cache(maxsize=1024)
def _insert_sql(table: str, columns: tuple[str, ...]) -> str:
    """The INSERT for one table and set of columns, built once: quoting checks every name."""
    cols = ", ".join(quote(c) for c in columns)
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {quote(table)} ({cols}) VALUES ({marks})"
