"""The `_jobs` table and every statement on it: enqueue, claim with a lease, settle, list, re-drive, purge.

Each function runs on a connection inside a transaction that its caller owns, so an
enqueue commits or rolls back with the mutation that made it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

PENDING, RUNNING, DEAD = "pending", "running", "dead"
STATUSES = (PENDING, RUNNING, DEAD)

DDL = [
    """CREATE TABLE IF NOT EXISTS _jobs (
        id INTEGER PRIMARY KEY,
        queue TEXT NOT NULL,
        payload TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        run_at REAL NOT NULL,
        lease_until REAL,
        worker TEXT,
        errors TEXT NOT NULL DEFAULT '[]',
        created_at REAL NOT NULL,
        finished_at REAL
    )""",
    "CREATE INDEX IF NOT EXISTS ix__jobs_ready ON _jobs (status, run_at)",
]


@dataclass(frozen=True, slots=True)
class Job:
    """One job as a worker or an admin sees it."""

    id: int
    queue: str
    payload: Any
    status: str
    attempts: int
    max_attempts: int
    run_at: float
    errors: list[dict[str, Any]]
    created_at: float
    finished_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "queue": self.queue,
            "payload": self.payload,
            "status": self.status,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "run_at": self.run_at,
            "errors": self.errors,
            "created_at": self.created_at,
            "finished_at": self.finished_at,
        }


_COLUMNS = "id, queue, payload, status, attempts, max_attempts, run_at, errors, created_at, finished_at"


def _job(row: Sequence[Any]) -> Job:
    return Job(
        row[0], row[1], orjson.loads(row[2]), row[3], row[4], row[5], row[6], orjson.loads(row[7]), row[8], row[9]
    )


def enqueue(conn: sqlite3.Connection, queue: str, payload: bytes, max_attempts: int, delay: float = 0.0) -> int:
    now = time.time()
    cur = conn.execute(
        "INSERT INTO _jobs (queue, payload, max_attempts, run_at, created_at) VALUES (?, ?, ?, ?, ?)",
        (queue, payload, max_attempts, now + delay, now),
    )
    return int(cur.lastrowid or 0)


def claim(conn: sqlite3.Connection, worker: str, limit: int, lease: float, queues: Iterable[str]) -> list[Job]:
    """Take up to `limit` jobs that are due, or whose worker's lease ran out (it died), for `lease` seconds."""
    now = time.time()
    names = list(queues)
    marks = ", ".join("?" * len(names))
    # Two limited scans joined, not one OR: each follows the (status, run_at) index in order
    # and stops at `limit`, so a claim costs the same with 10 or 100,000 jobs waiting.
    rows = conn.execute(
        f"""UPDATE _jobs SET status = 'running', attempts = attempts + 1, lease_until = ?, worker = ?
            WHERE id IN (
                SELECT id FROM (SELECT id FROM _jobs WHERE status = 'pending' AND run_at <= ?
                                AND queue IN ({marks}) ORDER BY run_at, id LIMIT ?)
                UNION ALL
                SELECT id FROM (SELECT id FROM _jobs WHERE status = 'running' AND lease_until < ?
                                AND queue IN ({marks}) LIMIT ?)
                LIMIT ?)
            RETURNING {_COLUMNS}""",
        (now + lease, worker, now, *names, limit, now, *names, limit, limit),
    ).fetchall()
    return sorted((_job(r) for r in rows), key=lambda j: (j.run_at, j.id))


def complete(conn: sqlite3.Connection, ids: Sequence[int], worker: str) -> None:
    """Done jobs leave the table; a job whose lease another worker took over is that worker's now."""
    conn.executemany("DELETE FROM _jobs WHERE id = ? AND worker = ? AND status = 'running'", ((i, worker) for i in ids))


def fail(conn: sqlite3.Connection, job: Job, worker: str, error: str, retry_at: float | None) -> None:
    """Record the attempt's error; run again at `retry_at`, or bury the job (dead) when it is None."""
    entry = {"attempt": job.attempts, "at": time.time(), "error": error}
    errors = orjson.dumps([*job.errors, entry]).decode()
    if retry_at is None:
        conn.execute(
            "UPDATE _jobs SET status = 'dead', errors = ?, lease_until = NULL, finished_at = ? "
            "WHERE id = ? AND worker = ? AND status = 'running'",
            (errors, time.time(), job.id, worker),
        )
    else:
        conn.execute(
            "UPDATE _jobs SET status = 'pending', errors = ?, lease_until = NULL, run_at = ? "
            "WHERE id = ? AND worker = ? AND status = 'running'",
            (errors, retry_at, job.id, worker),
        )


def listing(conn: sqlite3.Connection, status: str | None, queue: str | None, limit: int) -> list[Job]:
    where, params = _filter(status, queue)
    rows = conn.execute(f"SELECT {_COLUMNS} FROM _jobs{where} ORDER BY id LIMIT ?", (*params, limit)).fetchall()
    return [_job(r) for r in rows]


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    found = dict(conn.execute("SELECT status, count(*) FROM _jobs GROUP BY status").fetchall())
    return {status: int(found.get(status, 0)) for status in STATUSES}


def redrive(conn: sqlite3.Connection, ids: Sequence[int] | None, queue: str | None) -> int:
    """Dead jobs (all, by id, or of one queue) start again with a fresh count of attempts."""
    where, params = _filter(DEAD, queue)
    if ids is not None:
        where += f" AND id IN ({', '.join('?' * len(ids))})"
        params = [*params, *ids]
    cur = conn.execute(
        f"UPDATE _jobs SET status = 'pending', attempts = 0, run_at = ?, finished_at = NULL{where}",
        (time.time(), *params),
    )
    return cur.rowcount


def purge(conn: sqlite3.Connection, status: str, queue: str | None) -> int:
    where, params = _filter(status, queue)
    return conn.execute(f"DELETE FROM _jobs{where}", params).rowcount


def next_due(conn: sqlite3.Connection, queues: Iterable[str]) -> float | None:
    """When the next job of `queues` becomes due (a pending job's run_at, or a running one's lease end)."""
    names = list(queues)
    marks = ", ".join("?" * len(names))
    row = conn.execute(
        f"SELECT min(CASE status WHEN 'pending' THEN run_at ELSE lease_until END) FROM _jobs "
        f"WHERE status IN ('pending', 'running') AND queue IN ({marks})",
        names,
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def _filter(status: str | None, queue: str | None) -> tuple[str, list[Any]]:
    parts, params = [], []
    if status is not None:
        parts.append("status = ?")
        params.append(status)
    if queue is not None:
        parts.append("queue = ?")
        params.append(queue)
    return (" WHERE " + " AND ".join(parts)) if parts else "", params
