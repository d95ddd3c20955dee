"""GatewayStore: the gateway's own SQLite file — the embedding cache, the log of calls and the counters.

A second file, like PocketBase's request logs, so that cache and log writes never wait on, or delay, the app's
writes. One thread owns the connection and runs every statement, so the event loop never blocks on SQLite; each
gateway call costs one read (the cache lookup) and one transaction (new vectors, its log row, the counters).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS embedding_cache (
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    sha256 BLOB NOT NULL,
    dims INTEGER NOT NULL,
    vector BLOB NOT NULL,            -- float32, little-endian, dims * 4 bytes
    created_at REAL NOT NULL,
    PRIMARY KEY (provider, model, sha256)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,                -- Unix time the call started
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    texts INTEGER NOT NULL,
    cached INTEGER NOT NULL,         -- texts answered from the cache
    latency_ms REAL NOT NULL,
    error TEXT,                      -- the error code (UpstreamError, RateLimited, ...), NULL on success
    reason TEXT                      -- what went wrong, as in the error's details
);
CREATE TABLE IF NOT EXISTS counters (
    provider TEXT PRIMARY KEY,
    calls INTEGER NOT NULL,
    texts INTEGER NOT NULL,
    cache_hits INTEGER NOT NULL,
    cache_misses INTEGER NOT NULL,
    errors INTEGER NOT NULL
);
"""
COUNTERS = ("calls", "texts", "cache_hits", "cache_misses", "errors")
LOOKUP_CHUNK = 500  # hashes per SELECT ... IN (...): under SQLite's default limit of bound parameters


@dataclass(frozen=True, slots=True)
class Call:
    """One gateway call, as the log keeps it."""

    at: float
    provider: str
    model: str
    texts: int
    cached: int
    latency_ms: float
    error: str | None = None
    reason: str | None = None


class GatewayStore:
    """The SQLite file behind an AIGateway; every method is a coroutine run on the store's own thread."""

    def __init__(self, path: Path, *, keep_calls: int = 100_000) -> None:
        self.path = path
        self.keep_calls = keep_calls  # the log keeps the newest calls only; the counters keep every call
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="ai-store")
        self._db: sqlite3.Connection | None = None
        self._writes = 0
        self._thread.submit(self._open).result()

    async def lookup(self, provider: str, model: str, hashes: list[bytes]) -> dict[bytes, bytes]:
        """The cached vectors (raw float32 bytes) of those hashes that have one."""
        return await self._run(self._lookup, provider, model, hashes)

    async def record(self, call: Call, new: Iterable[tuple[bytes, bytes, int]] = ()) -> None:
        """In one transaction: cache the new (hash, vector bytes, dims), log the call, add it to the counters."""
        await self._run(self._record, call, list(new))

    async def calls(self, limit: int = 100, provider: str | None = None) -> list[Call]:
        """The newest calls first."""
        return await self._run(self._calls, limit, provider)

    def counters(self) -> dict[str, dict[str, int]]:
        """The counters of every provider, read now (blocking: call it at start-up, not on the event loop)."""
        return self._thread.submit(self._counters).result()

    def close(self) -> None:
        if self._db is not None:
            self._thread.submit(self._close).result()
        self._thread.shutdown(wait=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None)
        db.execute("PRAGMA journal_mode = WAL")  # readers (a dashboard) never block the gateway's writes
        db.execute("PRAGMA synchronous = NORMAL")  # a cache and a log: a power cut may lose the last calls, no more
        db.execute("PRAGMA busy_timeout = 5000")
        db.executescript(SCHEMA)
        self._db = db

    def _close(self) -> None:
        assert self._db is not None
        self._db.close()
        self._db = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the AI gateway is closed")
        return self._db

    def _lookup(self, provider: str, model: str, hashes: list[bytes]) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        for i in range(0, len(hashes), LOOKUP_CHUNK):
            chunk = hashes[i : i + LOOKUP_CHUNK]
            sql = (
                "SELECT sha256, vector FROM embedding_cache WHERE provider = ? AND model = ? "
                f"AND sha256 IN ({', '.join('?' * len(chunk))})"
            )
            found.update(self._conn().execute(sql, (provider, model, *chunk)).fetchall())
        return found

    def _record(self, call: Call, new: list[tuple[bytes, bytes, int]]) -> None:
        db = self._conn()
        hits, errors = call.cached, int(call.error is not None)
        with db:  # BEGIN ... COMMIT (or ROLLBACK): one transaction per call
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT OR REPLACE INTO embedding_cache VALUES (?, ?, ?, ?, ?, ?)",
                [(call.provider, call.model, h, dims, vector, call.at) for h, vector, dims in new],
            )
            db.execute("INSERT INTO calls VALUES (NULL, :at, :provider, :model, :texts, :cached, "
                       ":latency_ms, :error, :reason)", asdict(call))  # fmt: skip
            db.execute(
                "INSERT INTO counters VALUES (?, 1, ?, ?, ?, ?) ON CONFLICT (provider) DO UPDATE SET "
                "calls = calls + 1, texts = texts + excluded.texts, cache_hits = cache_hits + excluded.cache_hits, "
                "cache_misses = cache_misses + excluded.cache_misses, errors = errors + excluded.errors",
                (call.provider, call.texts, hits, call.texts - hits, errors),
            )
        self._writes += 1
        if self._writes % 1_000 == 0:
            self._trim()

    def _trim(self) -> None:
        db = self._conn()
        with db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM calls WHERE id <= (SELECT max(id) FROM calls) - ?", (self.keep_calls,))

    def _calls(self, limit: int, provider: str | None) -> list[Call]:
        columns = "at, provider, model, texts, cached, latency_ms, error, reason"
        where, args = ("WHERE provider = ?", (provider,)) if provider else ("", ())
        rows = self._conn().execute(f"SELECT {columns} FROM calls {where} ORDER BY id DESC LIMIT ?", (*args, limit))
        return [Call(*row) for row in rows]

    def _counters(self) -> dict[str, dict[str, int]]:
        rows = self._conn().execute(f"SELECT provider, {', '.join(COUNTERS)} FROM counters").fetchall()
        return {row[0]: dict(zip(COUNTERS, row[1:], strict=True)) for row in rows}
