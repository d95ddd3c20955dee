"""Compiling reads to SQL: conditions with bound parameters, ordering, limits and keyset cursors."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ..errors import ValidationFailed
from .schema import TableSchema, quote

_OPS = {"=", "!=", "<", "<=", ">", ">=", "in"}


@dataclass(frozen=True, slots=True)
class Condition:
    """A SQL boolean expression with its parameters; `eq` names an equality filter for read sets,
    `cols` the columns it reads (None: not known, so any)."""

    sql: str
    params: tuple[Any, ...] = ()
    eq: tuple[str, Any] | None = None
    cols: frozenset[str] | None = None


TRUE = Condition("1", cols=frozenset())
FALSE = Condition("0", cols=frozenset())


def compare(table: TableSchema, column: str, op: str, value: Any) -> Condition:
    """`column op value`, with the value encoded as the column stores it."""
    if op not in _OPS:
        raise ValidationFailed(f"Unknown operator {op!r}; use one of {sorted(_OPS)}.")
    encode = _encoder(table, column)
    if op == "in":
        # A bare string is iterable too, and would be read as the list of its characters.
        if not isinstance(value, list | tuple | set | frozenset):
            raise ValidationFailed(
                f"`in` needs a list of values for {column!r}, not {type(value).__name__}.",
                details=[{"field": column, "message": "must be a list"}],
            )
        values = tuple(encode(v) for v in value)
        if not values:
            return FALSE
        marks = ", ".join("?" * len(values))
        return Condition(f"{quote(column)} IN ({marks})", values, cols=frozenset((column,)))
    if value is None and op in ("=", "!="):
        null_sql = "IS NULL" if op == "=" else "IS NOT NULL"
        eq_null = (column, None) if op == "=" else None
        return Condition(f"{quote(column)} {null_sql}", (), eq_null, frozenset((column,)))
    eq = (column, value) if op == "=" else None
    return Condition(f"{quote(column)} {op} ?", (encode(value),), eq, frozenset((column,)))


def _encoder(table: TableSchema, column: str) -> Any:
    if column == "id":
        return lambda v: v
    col = table.column(column)
    return lambda v: col.to_sql(v) if v is not None else None


@dataclass(frozen=True, slots=True)
class Select:
    """One SELECT over one table: every condition ANDed, then ordered and limited."""

    table: TableSchema
    conditions: tuple[Condition, ...] = ()
    order: tuple[tuple[str, bool], ...] = ()
    limit: int | None = None
    # The caller's own equality filters (row-level security's left out), as clients see them.
    view_filters: tuple[tuple[str, Any], ...] = ()

    def where_sql(self) -> tuple[str, list[Any]]:
        if not self.conditions:
            return "", []
        params: list[Any] = []
        for cond in self.conditions:
            params.extend(cond.params)
        return " WHERE " + " AND ".join(f"({c.sql})" for c in self.conditions), params

    def sql(self) -> tuple[str, list[Any]]:
        where, params = self.where_sql()
        sql = f"SELECT * FROM {quote(self.table.name)}{where}"
        if self.order:
            sql += " ORDER BY " + ", ".join(f"{quote(c)}{' DESC' if d else ''}" for c, d in self.order)
        if self.limit is not None:
            sql += " LIMIT ?"
            params.append(self.limit)
        return sql, params

    def count_sql(self) -> tuple[str, list[Any]]:
        where, params = self.where_sql()
        return f"SELECT count(*) FROM {quote(self.table.name)}{where}", params

    def equality_filters(self) -> dict[str, Any]:
        return dict(c.eq for c in self.conditions if c.eq is not None)

    def condition_columns(self) -> frozenset[str] | None:
        """The columns the conditions read (None: some condition could read any)."""
        cols: set[str] = set()
        for cond in self.conditions:
            if cond.cols is None:
                return None
            cols |= cond.cols
        return frozenset(cols)


def parse_order(table: TableSchema, spec: str) -> tuple[str, bool]:
    """ "-created_at" → ("created_at", descending)."""
    desc = spec.startswith("-")
    name = spec.lstrip("-+")
    if not table.has_column(name):
        table.column(name)
    return name, desc


def cursor_condition(order: Sequence[tuple[str, bool]], cursor: str) -> Condition:
    """Rows strictly after the cursor in the given order (the order must end with `id`)."""
    values = decode_cursor(cursor, len(order))
    clauses: list[str] = []
    params: list[Any] = []
    for i, (col, desc) in enumerate(order):
        parts = [f"{quote(c)} = ?" for c, _ in order[:i]]
        parts.append(f"{quote(col)} {'<' if desc else '>'} ?")
        clauses.append("(" + " AND ".join(parts) + ")")
        params.extend(values[: i + 1])
    return Condition(" OR ".join(clauses), tuple(params), cols=frozenset(col for col, _ in order))


def encode_cursor(row: dict[str, Any], order: Sequence[tuple[str, bool]], table: TableSchema) -> str:
    values = [row[c] if c == "id" else table.columns[c].to_sql(row[c]) for c, _ in order]
    return base64.urlsafe_b64encode(orjson.dumps(values)).decode().rstrip("=")


def decode_cursor(cursor: str, width: int) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = orjson.loads(raw)
    except (ValueError, orjson.JSONDecodeError):
        values = None
    if not isinstance(values, list) or len(values) != width or not all(_cursor_value(v) for v in values):
        raise ValidationFailed(
            "The cursor is not one this query returned; pass the `cursor` of the previous page.",
            details=[{"field": "cursor", "message": "invalid cursor"}],
        )
    return values


def _cursor_value(value: Any) -> bool:
    # SQLite integers are 64-bit signed: a larger one (orjson reads up to 2**64 - 1) would fail
    # when bound, as a 500 rather than a 400.
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return value is None or isinstance(value, str | float)
