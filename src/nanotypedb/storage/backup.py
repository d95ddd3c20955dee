"""Copy a live SQLite database with SQLite's online backup API: one consistent snapshot while writers go on."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ..errors import ConfigError

# A writer of another process may hold the lock for a moment (a group commit): wait for it.
BUSY_TIMEOUT_MS = 10_000


def backup_file(source: Path, target: Path) -> None:
    """Write a copy of `source` (a database in use, WAL and all) to `target`, a file that must not exist yet.

    The copy is made in one step, so it is the snapshot of one read transaction: every commit
    finished before the backup began is in it, none that finished after. It is checked with
    `PRAGMA integrity_check` and left in rollback-journal mode, one file with nothing beside it.
    """
    if not source.is_file():
        raise ConfigError(f"There is no database at {source}: is --data-dir right?")
    src = sqlite3.connect(source, timeout=BUSY_TIMEOUT_MS / 1000)
    dst = sqlite3.connect(target)
    try:
        src.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        src.backup(dst)
        dst.execute("PRAGMA journal_mode=DELETE")
        verdict = dst.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        dst.close()
        src.close()
    if verdict != "ok":
        raise ConfigError(f"The copy of {source} fails its integrity check: {verdict}.")
