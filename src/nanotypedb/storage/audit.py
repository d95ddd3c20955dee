"""The audit log's table, `_audit`: entries written in the transaction of the change they record, chained by hash.

Each entry's hash is SHA-256 over the previous entry's hash and a canonical JSON of its own
fields; the `audit_head` row of `_meta` keeps the last seq and hash, updated in the same
transaction, so that deleting the newest entries is caught too (audit_verify.py walks the
chain). `_meta` because the engine writes its version there on every commit: the head costs
no extra page per commit.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from ..errors import ValidationFailed

GENESIS = "0" * 64
"""The `prev_hash` of the first entry of a chain."""

DDL = [
    # `row_id` has no type: a user table's id is an integer, an API key's id is text.
    """CREATE TABLE IF NOT EXISTS _audit (
        seq INTEGER PRIMARY KEY,
        time TEXT NOT NULL,
        environment TEXT NOT NULL,
        actor_kind TEXT NOT NULL,
        actor_id TEXT NOT NULL,
        function TEXT NOT NULL,
        table_name TEXT,
        row_id,
        action TEXT NOT NULL,
        before TEXT,
        after TEXT,
        request_id TEXT NOT NULL,
        client TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL
    )""",
    # The engine's own `_meta` (the same statement), also made here for system.sqlite3, which has no engine.
    "CREATE TABLE IF NOT EXISTS _meta (key TEXT PRIMARY KEY, value)",
    f"INSERT OR IGNORE INTO _meta (key, value) VALUES ('audit_head', '0 {GENESIS}')",
]

FIELDS = (
    "seq",
    "time",
    "environment",
    "actor_kind",
    "actor_id",
    "function",
    "table",
    "row_id",
    "action",
    "before",
    "after",
    "request_id",
    "client",
    "prev_hash",
    "hash",
)
# The hashed fields, in the order of the canonical JSON array (all but prev_hash and hash), as columns.
HASHED = ", ".join("table_name" if f == "table" else f for f in FIELDS[:-2])
COLUMNS = f"{HASHED}, prev_hash, hash"
HEAD = "SELECT value FROM _meta WHERE key = 'audit_head'"
_SET_HEAD = "UPDATE _meta SET value = ? WHERE key = 'audit_head'"
_INSERT = f"INSERT INTO _audit ({COLUMNS}) VALUES ({', '.join('?' * len(FIELDS))})"
# A column whose name is one of these, or ends with `_` and one of these, is stored as REDACTED.
SECRET_NAMES = ("secret", "password", "token", "api_key", "apikey", "private_key")
REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class Origin:
    """Who made a change and how: the actor, the function (or command), the request and the client address."""

    actor_kind: str
    actor_id: str
    function: str = ""
    request_id: str = ""
    client: str = ""


UNKNOWN = Origin("system", "unknown")
"""The origin of a write that named none (a test, a tool writing through the engine directly)."""


class Entry(Protocol):
    """What an entry records: a row changed (`op` insert, update, delete; a transaction's `Change` is one)
    or an administrative act (an `Act`)."""

    @property
    def table(self) -> str | None: ...
    @property
    def op(self) -> str: ...
    @property
    def id(self) -> Any: ...
    @property
    def before(self) -> Mapping[str, Any] | None: ...
    @property
    def after(self) -> Mapping[str, Any] | None: ...


@dataclass(frozen=True, slots=True)
class Act:
    """An administrative act to record (`op` is its action: `key.create`, `jobs.redrive`, …)."""

    op: str
    table: str | None
    id: Any
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None


def entry_hash(prev_hash: str, fields: Sequence[Any]) -> str:
    """SHA-256 of the previous hash and the canonical JSON array of an entry's hashed fields."""
    return hashlib.sha256(prev_hash.encode() + orjson.dumps(fields)).hexdigest()


def timestamp(when: dt.datetime | None = None) -> str:
    """UTC, fixed width, so that text order is time order (the export filters compare text)."""
    when = when or dt.datetime.now(dt.UTC)
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# The last whole second formatted, and its text: one tuple, replaced whole, so threads never see half of it.
_second: tuple[int, str] = (0, "")


def now() -> str:
    """`timestamp()` of the present, a few times cheaper: strftime runs once a second."""
    global _second
    t = time.time()
    whole = int(t)
    second = _second
    if whole != second[0]:
        second = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{second[1]}.{int((t - whole) * 1_000_000):06d}Z"


class AuditLog:
    """Appends entries of one environment to the `_audit` chain of the connection's database."""

    def __init__(self, environment: str) -> None:
        self.environment = environment

    def append(self, conn: sqlite3.Connection, origin: Origin, entries: Iterable[Entry]) -> int:
        """Write one entry per item of `entries` inside the caller's transaction; returns the new head seq."""
        return self.append_many(conn, [(origin, entries)])

    def append_many(self, conn: sqlite3.Connection, groups: Iterable[tuple[Origin, Iterable[Entry]]]) -> int:
        """The entries of several writes (a group commit's mutations, in commit order), in one go.

        The head is read here, inside the transaction, not kept in memory: another process
        (`nanotypedb worker`, the CLI) may have appended since.
        """
        seq, prev = parse_head(conn.execute(HEAD).fetchone()[0])
        at, env, rows = now(), self.environment, []
        for o, entries in groups:
            for e in entries:
                seq += 1
                fields = (
                    seq, at, env, o.actor_kind, o.actor_id, o.function, e.table, e.id,
                    e.op, _json(e.before), _json(e.after), o.request_id, o.client,
                )  # fmt: skip
                digest = hashlib.sha256(prev.encode() + orjson.dumps(fields)).hexdigest()  # entry_hash, inlined
                rows.append((*fields, prev, digest))
                prev = digest
        conn.executemany(_INSERT, rows)
        conn.execute(_SET_HEAD, (f"{seq} {prev}",))
        return seq


def parse_head(value: str) -> tuple[int, str]:
    """The head row's value, `"<seq> <hash>"`: the last entry's seq and hash."""
    seq, _, digest = str(value).partition(" ")
    return int(seq), digest


def _json(row: Mapping[str, Any] | None) -> str | None:
    if row is None:
        return None
    secret = _secret_columns(tuple(row))
    if secret:
        row = {k: (REDACTED if k in secret and v is not None else v) for k, v in row.items()}
    return orjson.dumps(row, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=_default).decode()


@functools.lru_cache(maxsize=1024)
def _secret_columns(names: tuple[str, ...]) -> frozenset[str]:
    # Cached per set of columns: the check costs nothing after a table's first write.
    return frozenset(n for n in names if any(n.lower() == s or n.lower().endswith("_" + s) for s in SECRET_NAMES))


def _default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    return str(value)


# -- reading -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Filter:
    """Which entries an export takes: `since` <= time < `until`, one actor, one table (None: any)."""

    since: str | None = None
    until: str | None = None
    actor_kind: str | None = None
    actor_id: str | None = None
    table: str | None = None

    @classmethod
    def parse(
        cls, since: str | None = None, until: str | None = None, actor: str | None = None, table: str | None = None
    ) -> Filter:
        """From the arguments of exportAuditLog and the download: ISO 8601 dates, `kind:id` or an id."""
        kind, actor_id = _actor(actor) if actor else (None, None)
        start, end = _when("since", since), _when("until", until)
        if start is not None and end is not None and start >= end:
            raise ValidationFailed(f"`since` ({since}) must be before `until` ({until}).")
        return cls(start, end, kind, actor_id, table or None)

    def where(self) -> tuple[str, list[Any]]:
        parts, params = [], []
        for sql, value in (
            ("time >= ?", self.since),
            ("time < ?", self.until),
            ("actor_kind = ?", self.actor_kind),
            ("actor_id = ?", self.actor_id),
            ("table_name = ?", self.table),
        ):
            if value is not None:
                parts.append(sql)
                params.append(value)
        return "".join(f" AND {p}" for p in parts), params


ACTOR_KINDS = ("admin", "service", "user", "anonymous", "system", "cli")


def _actor(text: str) -> tuple[str | None, str]:
    kind, sep, actor_id = text.partition(":")
    if sep and kind in ACTOR_KINDS:
        return kind, actor_id
    return None, text


def _when(name: str, text: str | None) -> str | None:
    if not text:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(
            f"`{name}` is {text!r}, not an ISO 8601 date or time: pass e.g. 2026-01-31 or 2026-01-31T12:00:00Z."
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)  # a time without an offset is UTC, like the entries
    return timestamp(when)


def page(conn: sqlite3.Connection, where: Filter, after_seq: int, limit: int) -> list[tuple[Any, ...]]:
    """Up to `limit` entries with seq > `after_seq` that pass `where`, oldest first (keyset pagination)."""
    sql, params = where.where()
    return conn.execute(
        f"SELECT {COLUMNS} FROM _audit WHERE seq > ?{sql} ORDER BY seq LIMIT ?", (after_seq, *params, limit)
    ).fetchall()


def as_dict(row: Sequence[Any]) -> dict[str, Any]:
    """An entry as JSON exports show it: `before` and `after` as objects, not text."""
    entry = dict(zip(FIELDS, row, strict=True))
    for name in ("before", "after"):
        if entry[name] is not None:
            entry[name] = orjson.loads(entry[name])
    return entry
