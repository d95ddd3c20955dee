"""Bring a database's tables in line with the declared ones: apply additive changes, refuse the rest."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import SchemaError
from .schema import Column, TableSchema, quote

_HOW_TO_MIGRATE = (
    "Write a numbered migration that changes the table (see docs/schema-and-migrations.md), "
    "e.g. app.migration(8, 'rename column', sql='ALTER TABLE ...')."
)


@dataclass(frozen=True, slots=True)
class SyncReport:
    created_tables: tuple[str, ...]
    added_columns: tuple[str, ...]
    created_indexes: tuple[str, ...]


def sync_schema(conn: sqlite3.Connection, tables: Iterable[TableSchema]) -> SyncReport:
    """Create missing tables, columns and indexes in one transaction; raise SchemaError on any other drift."""
    created: list[str] = []
    added: list[str] = []
    indexes: list[str] = []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table in tables:
            existing = _columns(conn, table.name)
            if not existing:
                for stmt in table.ddl():
                    conn.execute(stmt)
                created.append(table.name)
                continue
            added += _add_columns(conn, table, existing)
            indexes += _add_indexes(conn, table)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return SyncReport(tuple(created), tuple(added), tuple(indexes))


def _columns(conn: sqlite3.Connection, table: str) -> dict[str, tuple[str, bool, bool]]:
    rows = conn.execute(f"PRAGMA table_info({quote(table)})").fetchall()
    return {r[1]: (str(r[2]).upper(), bool(r[3]), bool(r[5])) for r in rows}


def _add_columns(
    conn: sqlite3.Connection, table: TableSchema, existing: dict[str, tuple[str, bool, bool]]
) -> list[str]:
    for name in existing:
        if name != "id" and name not in table.columns:
            raise SchemaError(
                f"Table {table.name!r} has a column {name!r} that the app no longer declares. " + _HOW_TO_MIGRATE
            )
    added = []
    for name, col in table.columns.items():
        if name in existing:
            _check_same(table.name, col, existing[name])
            continue
        if not col.nullable and not _has_constant_default(col):
            raise SchemaError(
                f"Table {table.name!r}: new column {name!r} is NOT NULL without a constant default, "
                "so existing rows would have no value. Make it `| None`, give it a default, or "
                + _HOW_TO_MIGRATE[0].lower()
                + _HOW_TO_MIGRATE[1:]
            )
        conn.execute(f"ALTER TABLE {quote(table.name)} ADD COLUMN {col.ddl()}")
        added.append(f"{table.name}.{name}")
    return added


def _has_constant_default(col: Column) -> bool:
    return col.default is not None and isinstance(col.default, str | int | float | bool)


def _check_same(table: str, col: Column, found: tuple[str, bool, bool]) -> None:
    sql_type, notnull, _ = found
    if sql_type != col.sql_type or notnull == col.nullable:
        want = f"{col.sql_type}{'' if col.nullable else ' NOT NULL'}"
        have = f"{sql_type}{' NOT NULL' if notnull else ''}"
        raise SchemaError(
            f"Table {table!r}, column {col.name!r}: the app declares {want} but the database "
            f"has {have}. " + _HOW_TO_MIGRATE
        )


def _add_indexes(conn: sqlite3.Connection, table: TableSchema) -> list[str]:
    have = {r[1] for r in conn.execute(f"PRAGMA index_list({quote(table.name)})").fetchall()}
    made = []
    for index in table.indexes:
        if index.name(table.name) not in have:
            try:
                conn.execute(index.ddl(table.name))
            except sqlite3.IntegrityError:
                cols = ", ".join(index.columns)
                raise SchemaError(
                    f"Table {table.name!r}: cannot add a unique index on ({cols}) because existing rows "
                    "share values there. Remove the duplicates in a numbered migration first."
                ) from None
            made.append(index.name(table.name))
    return made
