"""Numbered migrations, applied in order, each recorded in `_migrations` with a checksum of its text."""

from __future__ import annotations

import datetime as dt
import hashlib
import inspect
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ..errors import ConfigError, MigrationError
from .audit import Act, AuditLog, Origin

MigrationFn = Callable[[sqlite3.Connection], None]


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of a database's history: SQL text, or a function given the open connection."""

    number: int
    name: str
    sql: str | None = None
    fn: MigrationFn | None = None

    @property
    def checksum(self) -> str:
        text = self.sql if self.sql is not None else inspect.getsource(self.fn)  # type: ignore[arg-type]
        return hashlib.sha256(text.strip().encode()).hexdigest()

    def run(self, conn: sqlite3.Connection) -> None:
        if self.sql is not None:
            for statement in _statements(self.sql):
                conn.execute(statement)
        elif self.fn is not None:
            self.fn(conn)


def _statements(sql: str) -> list[str]:
    """Split a script on semicolons that end a complete statement (so triggers stay whole)."""
    out, buf = [], ""
    for part in sql.split(";"):
        buf += part + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \n\t;"):
                out.append(buf.strip())
            buf = ""
    if buf.strip(" \n\t;"):
        out.append(buf.strip())
    return out


def check_sequence(migrations: Iterable[Migration]) -> list[Migration]:
    ordered = sorted(migrations, key=lambda m: m.number)
    numbers = [m.number for m in ordered]
    if len(set(numbers)) != len(numbers):
        raise ConfigError(f"Two migrations share a number: {numbers}.")
    if any(n < 1 for n in numbers):
        raise ConfigError("Migration numbers start at 1.")
    return ordered


def applied(conn: sqlite3.Connection) -> dict[int, str]:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (number INTEGER PRIMARY KEY, name TEXT NOT NULL,"
        " checksum TEXT NOT NULL, applied_at TEXT NOT NULL)"
    )
    return dict(conn.execute("SELECT number, checksum FROM _migrations").fetchall())


def apply_migrations(
    conn: sqlite3.Connection, migrations: Iterable[Migration], audit: AuditLog | None = None
) -> list[Migration]:
    """Apply the pending migrations in order, each in its own transaction (with its audit entry);
    returns those applied."""
    done = applied(conn)
    ran = []
    for migration in check_sequence(migrations):
        recorded = done.get(migration.number)
        if recorded is not None:
            if recorded != migration.checksum:
                raise MigrationError(
                    f"Migration {migration.number} ({migration.name!r}) was changed after it was "
                    "applied to this database. Applied migrations are history: restore its "
                    "original text and add a new numbered migration for the change."
                )
            continue
        if _apply_one(conn, migration, audit):
            ran.append(migration)
    return ran


def _apply_one(conn: sqlite3.Connection, migration: Migration, audit: AuditLog | None) -> bool:
    """Apply one migration, with its audit entry; False (and no entry) when another process applied it first."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Asked again under the write lock: servers of two environments starting at once both bring
        # every environment's database up to date, and only one of them may run each migration.
        if conn.execute("SELECT 1 FROM _migrations WHERE number = ?", (migration.number,)).fetchone():
            conn.execute("ROLLBACK")
            return False
        migration.run(conn)
        conn.execute(
            "INSERT INTO _migrations (number, name, checksum, applied_at) VALUES (?, ?, ?, ?)",
            (migration.number, migration.name, migration.checksum, _now()),
        )
        if audit is not None:
            done = {"number": migration.number, "name": migration.name, "checksum": migration.checksum}
            act = Act("migration.apply", "_migrations", migration.number, None, done)
            audit.append(conn, Origin("system", "server", f"migration {migration.number}"), [act])
        conn.execute("COMMIT")
        return True
    except Exception as exc:
        # Not only sqlite3.Error: a function migration can fail with any exception of its own,
        # and start-up must still stop with MigrationError, not a bare traceback.
        conn.execute("ROLLBACK")
        raise MigrationError(
            f"Migration {migration.number} ({migration.name!r}) failed and was rolled back: {exc}."
        ) from exc
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
