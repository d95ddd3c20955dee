"""API keys for admins and services, kept in the system database with only their hashes stored.

The server verifies keys on its event loop while the CLI creates and revokes them from another
process, so the store is safe to share between threads and processes.
"""

from __future__ import annotations

import builtins
import enum
import hashlib
import secrets
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from ..errors import BadRequest
from ..storage import audit
from ..storage.audit import Act, AuditLog, Origin
from ..storage.engine import opening

T = TypeVar("T")

KEY_PREFIX = "ntdb_"
"""Every plaintext key starts with this, so leaked keys are easy to spot and to tell from JWTs."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS _api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    environment TEXT NOT NULL DEFAULT 'dev',
    hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT,
    last4 TEXT NOT NULL
)
"""

_COLUMNS = "id, name, kind, environment, created_at, revoked_at, last4"


class KeyKind(enum.StrEnum):
    """What a key may do: an admin key bypasses row-level security, a service key does not."""

    ADMIN = "admin"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """An API key as it may be shown: never its hash or its plaintext."""

    id: str
    name: str
    kind: KeyKind
    environment: str
    created_at: str
    revoked_at: str | None
    last4: str

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "kind": self.kind.value,
            "environment": self.environment,
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "last4": self.last4,
        }

    @classmethod
    def from_row(cls, row: tuple[Any, ...]) -> KeyRecord:
        """Build a record from a row selected with `_COLUMNS`."""
        key_id, name, kind, environment, created_at, revoked_at, last4 = row
        return cls(key_id, name, KeyKind(kind), environment, created_at, revoked_at, last4)


class KeyStore:
    """The `_api_keys` table of one SQLite file; every call is safe from any thread."""

    def __init__(self, path: Path, *, audited: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with opening(path):
            self._conn = _connect(path)
        # Creating and revoking keys are audited in this file's own chain (`audit verify` checks it).
        self.audited = audited

    def create(
        self, name: str, kind: str = "admin", environment: str = "dev", *, origin: Origin = audit.UNKNOWN
    ) -> tuple[KeyRecord, str]:
        """Create a key; return its record and its plaintext, which is never available again.

        The audit entry (in the same transaction) holds what `keys list` shows, never the key or its hash."""
        record_kind = _parse_kind(kind)
        plaintext = KEY_PREFIX + secrets.token_urlsafe(32)
        record = KeyRecord(
            id=_new_id(),
            name=_require_text("name", name),
            kind=record_kind,
            environment=_require_text("environment", environment),
            created_at=_now(),
            revoked_at=None,
            last4=plaintext[-4:],
        )
        self._write(lambda conn: self._insert(conn, record, _digest(plaintext), origin))
        return record, plaintext

    def list(self, environment: str | None = None) -> builtins.list[KeyRecord]:
        """Every key (of `environment`, when given), revoked ones included, oldest first."""
        where, params = _of(environment)
        rows = self._fetchall(f"SELECT {_COLUMNS} FROM _api_keys WHERE {where} ORDER BY rowid", params)
        return [KeyRecord.from_row(row) for row in rows]

    def revoke(self, key_id: str, environment: str | None = None, *, origin: Origin = audit.UNKNOWN) -> bool:
        """Revoke a key (of `environment`, when given); False when there is no such active key."""
        return self._write(lambda conn: self._revoke(conn, key_id, environment, origin))

    def delete_environment(self, environment: str, *, origin: Origin = audit.UNKNOWN) -> int:
        """Remove every key of a deleted environment, so that a new one of the same name starts with none;
        each removed key has its `key.delete` entry, in the same transaction."""
        return self._write(lambda conn: self._delete_environment(conn, environment, origin))

    def verify(self, plaintext: str) -> KeyRecord | None:
        """The active key whose plaintext this is, or None for an unknown or revoked key."""
        if not plaintext.startswith(KEY_PREFIX):
            return None  # A JWT or a typo: no need to touch the database.
        # An index lookup is not constant-time, but the caller chooses the plaintext, not the
        # digest, so timing can reveal nothing about the stored hashes.
        sql = f"SELECT {_COLUMNS} FROM _api_keys WHERE hash = ? AND revoked_at IS NULL"
        rows = self._fetchall(sql, (_digest(plaintext),))
        return KeyRecord.from_row(rows[0]) if rows else None

    def count_active(self, environment: str | None = None) -> int:
        where, params = _of(environment)
        rows = self._fetchall(f"SELECT COUNT(*) FROM _api_keys WHERE revoked_at IS NULL AND {where}", params)
        return int(rows[0][0])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def _insert(self, conn: sqlite3.Connection, record: KeyRecord, digest: str, origin: Origin) -> None:
        sql = f"INSERT INTO _api_keys ({_COLUMNS}, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        r = record
        row = (r.id, r.name, r.kind.value, r.environment, r.created_at, r.revoked_at, r.last4)
        conn.execute(sql, (*row, digest))
        self._audit(conn, origin, Act("key.create", "_api_keys", r.id, None, r.to_dict()), r.environment)

    def _revoke(self, conn: sqlite3.Connection, key_id: str, environment: str | None, origin: Origin) -> bool:
        where, params = _of(environment)
        sql = f"SELECT {_COLUMNS} FROM _api_keys WHERE id = ? AND revoked_at IS NULL AND {where}"
        row = conn.execute(sql, (key_id, *params)).fetchone()
        if row is None:
            return False
        before = KeyRecord.from_row(row)
        conn.execute("UPDATE _api_keys SET revoked_at = ? WHERE id = ?", (_now(), key_id))
        after = KeyRecord.from_row(conn.execute(f"SELECT {_COLUMNS} FROM _api_keys WHERE id = ?", (key_id,)).fetchone())
        act = Act("key.revoke", "_api_keys", key_id, before.to_dict(), after.to_dict())
        self._audit(conn, origin, act, before.environment)
        return True

    def _delete_environment(self, conn: sqlite3.Connection, environment: str, origin: Origin) -> int:
        rows = conn.execute(f"SELECT {_COLUMNS} FROM _api_keys WHERE environment = ?", (environment,)).fetchall()
        conn.execute("DELETE FROM _api_keys WHERE environment = ?", (environment,))
        for row in rows:
            r = KeyRecord.from_row(row)
            self._audit(conn, origin, Act("key.delete", "_api_keys", r.id, r.to_dict(), None), environment)
        return len(rows)

    def _audit(self, conn: sqlite3.Connection, origin: Origin, act: Act, environment: str) -> None:
        if self.audited:
            AuditLog(environment).append(conn, origin, [act])

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run `fn` in one write transaction: the key and its audit entry commit together or not at all."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return result

    def _fetchall(self, sql: str, params: tuple[Any, ...]) -> builtins.list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()


def _connect(path: Path) -> sqlite3.Connection:
    # Autocommit: every write here is one statement, so no transaction is held open between
    # calls to block the CLI's writes. check_same_thread=False because the lock serialises use.
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    # busy_timeout first, so that switching to WAL below waits for another process's lock
    # instead of failing with "database is locked".
    conn.execute("PRAGMA busy_timeout = 5000")
    # WAL lets the server keep verifying keys while the CLI writes from another process.
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(_SCHEMA)
    for ddl in audit.DDL:
        conn.execute(ddl)
    return conn


def _of(environment: str | None) -> tuple[str, tuple[Any, ...]]:
    """The condition selecting the keys of `environment`, or every key when it is None."""
    return ("environment = ?", (environment,)) if environment is not None else ("1", ())


def _digest(plaintext: str) -> str:
    # A fast hash is enough: a key carries 32 random bytes, far too many to brute-force, unlike a
    # password, which is why passwords need a slow hash and keys do not.
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _new_id() -> str:
    # 32 bits are plenty to tell apart the handful of keys a project has; the id is not a secret.
    return "k_" + secrets.token_hex(4)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _parse_kind(kind: str) -> KeyKind:
    try:
        return KeyKind(kind)
    except ValueError:
        kinds = ", ".join(repr(k.value) for k in KeyKind)
        raise BadRequest(f"Unknown key kind {kind!r}: expected one of {kinds}.") from None


def _require_text(field: str, value: str) -> str:
    text = value.strip()
    if not text:
        raise BadRequest(f"The key's {field} is empty: pass a non-empty {field}.")
    return text
