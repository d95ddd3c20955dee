"""The environments of a data directory: their registry (`_environments` in system.sqlite3) and the rule for names.

An environment is the unit of isolation: its own folder `env/<name>/` (database, files, logs) and its own API
keys. One server process serves one environment; every process reads the registry to know which exist.
"""

from __future__ import annotations

import builtins
import enum
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import BadRequest, EnvironmentExists, EnvironmentNotFound, InvalidEnvironmentName
from . import audit
from .audit import Act, Origin
from .engine import opening

DEFAULT_ENVIRONMENT = "dev"
"""Registered on first start, so a data directory from before environments keeps working unchanged."""

# A letter or digit first, so that a name is never read as a command-line flag.
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS _environments (
    name TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    created_at TEXT NOT NULL
)
"""


class EnvironmentType(enum.StrEnum):
    """What an environment is for; `prod` refuses development conveniences (`nanotypedb token` without --force)."""

    DEV = "dev"
    STAGING = "staging"
    PROD = "prod"


@dataclass(frozen=True, slots=True)
class Environment:
    name: str
    type: EnvironmentType
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type.value, "created_at": self.created_at}


def check_name(name: str) -> str:
    """`name` when it is a valid environment name; InvalidEnvironmentName saying the rule otherwise."""
    if not _NAME.fullmatch(name):
        raise InvalidEnvironmentName(
            f"{name[:40]!r} is not an environment name: use 1-32 lowercase letters, digits and '-', "
            "starting with a letter or digit (e.g. 'staging', 'prod-eu')."
        )
    return name


def parse_type(value: str) -> EnvironmentType:
    try:
        return EnvironmentType(value)
    except ValueError:
        types = ", ".join(t.value for t in EnvironmentType)
        raise BadRequest(f"Unknown environment type {value!r}: expected one of {types}.") from None


class EnvironmentRegistry:
    """The `_environments` table of one system database; open it for a few calls and close it."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with opening(path):
            self._conn = _connect(path)

    def __enter__(self) -> EnvironmentRegistry:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def get(self, name: str) -> Environment:
        """The environment `name`; EnvironmentNotFound, saying how to create it, when there is none."""
        check_name(name)
        row = self._conn.execute("SELECT name, type, created_at FROM _environments WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise EnvironmentNotFound(
                f"There is no environment {name!r} in this data directory: create it with "
                f"`nanotypedb env create {name} --type dev|staging|prod` (see `nanotypedb env list`)."
            )
        return _environment(row)

    def list(self) -> builtins.list[Environment]:
        """Every environment, oldest first."""
        rows = self._conn.execute("SELECT name, type, created_at FROM _environments ORDER BY rowid").fetchall()
        return [_environment(row) for row in rows]

    def create(self, name: str, kind: EnvironmentType, *, origin: Origin | None = None) -> Environment:
        """Register `name`; with `origin`, the act's `env.create` entry goes to this database's audit chain
        in the same transaction (None: not recorded, the `audit` setting is off)."""
        environment = Environment(check_name(name), kind, _now())

        def insert() -> None:
            self._conn.execute(
                "INSERT INTO _environments (name, type, created_at) VALUES (?, ?, ?)",
                (environment.name, kind.value, environment.created_at),
            )
            self._audit(origin, Act("env.create", "_environments", name, None, environment.to_dict()), name)

        try:
            self._write(insert)
        except sqlite3.IntegrityError:
            raise EnvironmentExists(f"The environment {name!r} exists already (see `nanotypedb env list`).") from None
        return environment

    def delete(self, name: str, *, origin: Origin | None = None) -> None:
        """Unregister `name`, with its `env.delete` entry as `create` records its `env.create`."""
        environment = self.get(name)  # an unknown name says so, rather than deleting nothing

        def remove() -> None:
            self._conn.execute("DELETE FROM _environments WHERE name = ?", (name,))
            self._audit(origin, Act("env.delete", "_environments", name, environment.to_dict(), None), name)

        self._write(remove)

    def _audit(self, origin: Origin | None, act: Act, environment: str) -> None:
        if origin is not None:
            for ddl in audit.DDL:  # the key store makes them too; this may be the first connection to the file
                self._conn.execute(ddl)
            audit.AuditLog(environment).append(self._conn, origin, [act])

    def _write(self, fn: Callable[[], None]) -> None:
        """Run `fn` in one write transaction: the act and its audit entry commit together or not at all."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            fn()
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        self._conn.close()


def _connect(path: Path) -> sqlite3.Connection:
    # The same settings as the key store's connection to this file: autocommit, wait for the other
    # processes' locks (a server, the CLI) rather than fail, WAL so that readers never block.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(_SCHEMA)
    # OR IGNORE: two processes may start on a new data directory at once.
    conn.execute(
        "INSERT OR IGNORE INTO _environments (name, type, created_at) VALUES (?, ?, ?)",
        (DEFAULT_ENVIRONMENT, EnvironmentType.DEV.value, _now()),
    )
    return conn


def _environment(row: tuple[str, str, str]) -> Environment:
    name, kind, created_at = row
    return Environment(name, EnvironmentType(kind), created_at)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")
