"""Walking an audit chain: which entries were edited, inserted or deleted since they were written.

One pass in seq order with one entry of look-ahead, so a chain of millions of entries is
checked in constant memory. What it cannot see: someone who rewrites every hash from the
tampered entry on and the head row as well (see docs/audit-log.md).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .audit import COLUMNS, GENESIS, HEAD, entry_hash, parse_head

# A chain rewritten wholesale would report every entry; the first ones say enough.
MAX_PROBLEMS = 100


@dataclass(frozen=True, slots=True)
class Problem:
    """`kind` (edited, inserted, deleted) at entry `seq` (through `last_seq` for a run of deleted ones)."""

    kind: str
    seq: int
    message: str
    last_seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "seq": self.seq, "message": self.message}
        if self.last_seq is not None:
            out["last_seq"] = self.last_seq
        return out


@dataclass(slots=True)
class ChainReport:
    """The verdict on one chain (`system`, or `env:<name>`)."""

    chain: str
    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problems: list[Problem] = field(default_factory=list)
    more_problems: int = 0  # found beyond MAX_PROBLEMS

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.more_problems += 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "chain": self.chain,
            "ok": self.ok,
            "entries": self.entries,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "problems": [p.to_dict() for p in self.problems],
            "more_problems": self.more_problems,
        }


def verify(conn: sqlite3.Connection, chain: str) -> ChainReport:
    """Check every entry's hash, every link and the head row; a database without a log is an empty chain."""
    report = ChainReport(chain)
    head = conn.execute(HEAD).fetchone() if _has_log(conn) else None
    if head is None:
        return report
    report.head_seq, report.head_hash = parse_head(head[0])
    _Walk(report).run(_pairs(conn.execute(f"SELECT {COLUMNS} FROM _audit ORDER BY seq")))
    return report


def verify_file(path: Path, chain: str) -> ChainReport:
    """`verify` on a read-only connection of its own (the CLI, and the admin function off the event loop)."""
    if not path.exists():
        return ChainReport(chain)  # never opened: nothing was logged
    # Not `mode=ro`: a WAL database whose -shm file is gone cannot be opened read-only.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        conn.execute("PRAGMA query_only=ON")
        conn.execute("BEGIN")  # one snapshot: entries appended meanwhile are not half seen
        return verify(conn, chain)
    finally:
        conn.close()


def _has_log(conn: sqlite3.Connection) -> bool:
    found = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('_audit', '_meta')"
    ).fetchone()
    return int(found[0]) == 2


def _pairs(rows: Iterator[Any]) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...] | None]]:
    """Each row with the one after it (None after the last)."""
    current = next(rows, None)
    while current is not None:
        following = next(rows, None)
        yield current, following
        current = following


class _Walk:
    """The state of one pass: the seq and hash the next entry should carry."""

    def __init__(self, report: ChainReport) -> None:
        self.report = report
        self.seq = 1  # the seq expected next
        self.prev = GENESIS  # the hash the next entry should link to
        self.last: tuple[int, str] = (0, GENESIS)  # the last entry accepted

    def run(self, pairs: Iterator[tuple[tuple[Any, ...], tuple[Any, ...] | None]]) -> None:
        for row, following in pairs:
            self.report.entries += 1
            self.step(row, following)
        self.finish()

    def step(self, row: tuple[Any, ...], following: tuple[Any, ...] | None) -> None:
        seq, prev_hash, stored = row[0], row[-2], row[-1]
        add = self.report.add
        if seq > self.report.head_seq:
            add(Problem("inserted", seq, f"entry {seq} is past the head of the chain (seq {self.report.head_seq})"))
            return
        if seq > self.seq:
            add(Problem("deleted", self.seq, f"{_entries(self.seq, seq - 1)} missing", seq - 1))
            self.prev = prev_hash  # the gap explains the broken link: go on from here
        if entry_hash(prev_hash, row[:-2]) != stored:
            add(Problem("edited", seq, f"entry {seq} no longer matches its hash"))
        elif prev_hash != self.prev:
            if following is not None and following[-2] == self.prev:
                # The next entry links to the one before this: this one was slipped in between.
                add(Problem("inserted", seq, f"entry {seq} is not part of the chain: its neighbours link past it"))
                self.seq = seq + 1
                return
            add(Problem("edited", self.last[0], f"entry {self.last[0]} was rewritten with a new hash"))
        self.seq, self.prev, self.last = seq + 1, stored, (seq, stored)

    def finish(self) -> None:
        head_seq, head_hash = self.report.head_seq, self.report.head_hash
        if head_seq >= self.seq:
            self.report.add(
                Problem("deleted", self.seq, f"{_entries(self.seq, head_seq)} missing (the newest)", head_seq)
            )
        elif self.last[0] == head_seq and self.last[1] != head_hash:
            self.report.add(Problem("edited", head_seq, f"entry {head_seq} differs from the head recorded for it"))


def _entries(first: int, last: int) -> str:
    return f"entries {first}..{last} are" if last > first else f"entry {first} is"
