"""AnalyticsStore: analytics.sqlite3, per-minute counts of calls and of rows changed, merged in by upsert.

A second file beside the data file, so that analytics writes never wait on, or delay, the app's
writes. Several processes (a server, a `nanotypedb worker`) may flush into one file: each flush
adds its counts to the rows already there, in one `BEGIN IMMEDIATE` transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .engine import Durability, connect, opening

# (minute, function, caller, status, latency bin, count, latency sum in s, latency max in s)
CallRow = tuple[int, str, str, str, int, int, float, float]
# (minute, table, action, rows changed)
ChangeRow = tuple[int, str, str, int]

SCHEMA = (
    # `minute`: Unix time of the minute's start. One row per latency bin of a series: adding two
    # histograms is then adding counts, which an upsert can do.
    """CREATE TABLE IF NOT EXISTS calls (
        minute INTEGER NOT NULL,
        function TEXT NOT NULL,
        caller TEXT NOT NULL,            -- admin, service, user or anonymous
        status TEXT NOT NULL,            -- ok, or the error code
        bin INTEGER NOT NULL,            -- latency bin (nanotypedb.analytics.histogram)
        count INTEGER NOT NULL,
        latency_sum REAL NOT NULL,       -- seconds
        latency_max REAL NOT NULL,       -- seconds
        PRIMARY KEY (minute, function, caller, status, bin)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS changes (
        minute INTEGER NOT NULL,
        "table" TEXT NOT NULL,
        action TEXT NOT NULL,            -- insert, update or delete
        rows INTEGER NOT NULL,
        PRIMARY KEY (minute, "table", action)
    ) WITHOUT ROWID""",
)
_ADD_CALLS = """INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT DO UPDATE SET count = count + excluded.count, latency_sum = latency_sum + excluded.latency_sum,
        latency_max = max(latency_max, excluded.latency_max)"""
_ADD_CHANGES = """INSERT INTO changes VALUES (?, ?, ?, ?)
    ON CONFLICT DO UPDATE SET rows = rows + excluded.rows"""
# Grouped by the asked bucket in SQL, so that a month read by the day returns few rows.
_READ_CALLS = """SELECT minute / :bucket * :bucket, function, caller, status, bin,
        sum(count), sum(latency_sum), max(latency_max)
    FROM calls WHERE minute >= :start AND minute < :end
    GROUP BY 1, function, caller, status, bin"""
_READ_CHANGES = """SELECT minute / :bucket * :bucket, "table", action, sum(rows)
    FROM changes WHERE minute >= :start AND minute < :end
    GROUP BY 1, "table", action"""


class AnalyticsStore:
    """One connection to analytics.sqlite3, used from worker threads one statement batch at a time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        # Flushes and reads run in threads of the default executor; one connection takes one at a time.
        self._lock = threading.Lock()

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # WAL, synchronous=NORMAL: a flush does not fsync; a power cut may lose the last flushes,
        # which analytics can afford (docs/analytics.md).
        with opening(self.path):
            conn = connect(self.path, Durability.NORMAL)
            for ddl in SCHEMA:
                conn.execute(ddl)
        self._conn = conn

    def add(self, calls: Iterable[CallRow], changes: Iterable[ChangeRow], keep_from: int) -> None:
        """Add counts to the rows already stored, and delete the minutes before `keep_from`, in one transaction."""
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(_ADD_CALLS, calls)
                conn.executemany(_ADD_CHANGES, changes)
                _prune(conn, keep_from)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def prune(self, keep_from: int) -> None:
        """Delete the minutes before `keep_from` (Unix time)."""
        self.add((), (), keep_from)

    def calls(self, start: int, end: int, bucket: int) -> list[CallRow]:
        """Call rows of the minutes in [start, end), their minute rounded down to `bucket` seconds."""
        return self._read(_READ_CALLS, start, end, bucket)

    def changes(self, start: int, end: int, bucket: int) -> list[ChangeRow]:
        """Rows-changed counts of the minutes in [start, end), their minute rounded down to `bucket` seconds."""
        return self._read(_READ_CHANGES, start, end, bucket)

    def _read(self, sql: str, start: int, end: int, bucket: int) -> list[Any]:
        with self._lock:
            return self._connection().execute(sql, {"start": start, "end": end, "bucket": bucket}).fetchall()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"{self.path} is not open")
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.close()
                self._conn = None


def _prune(conn: sqlite3.Connection, keep_from: int) -> None:
    conn.execute("DELETE FROM calls WHERE minute < ?", (keep_from,))
    conn.execute("DELETE FROM changes WHERE minute < ?", (keep_from,))
