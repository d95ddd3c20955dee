"""Checkpointer: folds the write-ahead log back into the database file from a thread of its own.

SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold: on the event
loop, every few hundred commits, a pause of milliseconds for every request and live query then
in flight. The engine turns it off on its write connection; this thread checkpoints instead,
on a connection of its own, in PASSIVE mode, which never blocks the writer or a reader.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)
# About SQLite's own threshold (1,000 WAL pages) at the few pages a typical commit writes.
EVERY_COMMITS = 200
# Commits short of EVERY_COMMITS are folded in once writes pause this long.
IDLE_SECONDS = 1.0
# The WAL restarts from its beginning only when a writer begins with every frame copied back:
# a checkpoint must land in a pause between commits. While the WAL holds more than
# CHASE_FRAMES, the thread looks every CHASE_SECONDS for such a pause (no commit since it last
# looked) and checkpoints in it; busy writes get a checkpoint every EVERY_COMMITS, no more.
CHASE_SECONDS = 0.002
CHASE_FRAMES = 500
# Writes that never pause leave the thread no such moment: past this many frames, the writer
# checkpoints itself after its next commit (SQLite's own behaviour), so the WAL stays bounded
# whatever the load.
WAL_LIMIT_FRAMES = 4000


class Checkpointer:
    """One thread and one connection that checkpoint one database file."""

    def __init__(self, connect: Callable[[], sqlite3.Connection], every: int = EVERY_COMMITS) -> None:
        self.checkpoints = 0  # run by the thread
        self.fallbacks = 0  # run by the writer because the WAL outgrew WAL_LIMIT_FRAMES
        self._connect = connect
        self._every = every
        # Written by the writer's thread and reset by this one: a count lost to the race only
        # moves the next checkpoint a little, so the commit path takes no lock.
        self._since = 0
        self._overdue = False
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ntdb-checkpoint", daemon=True)
        self._thread.start()

    def committed(self, writer: sqlite3.Connection) -> None:
        """A group commit landed in the WAL: called on the writer's thread, with no transaction open."""
        self._since += 1
        if self._overdue:
            self._overdue = False
            self.fallbacks += 1
            _checkpoint(writer)
        elif self._since >= self._every:
            self._wake.set()

    def stop(self) -> None:
        """Stop the thread; the engine's close runs the last, truncating checkpoint itself."""
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        conn = self._connect()
        chasing = False  # the WAL is long: look for a pause in the writes
        seen = 0  # the commit count when the thread last looked
        try:
            while True:
                counted = self._wake.wait(CHASE_SECONDS if chasing else IDLE_SECONDS)
                self._wake.clear()
                if self._stopping:
                    return
                since = self._since
                if not since:
                    chasing = False  # the last checkpoint saw every frame: the next write restarts the WAL
                    continue
                if chasing and not counted and since != seen:
                    seen = since  # commits still coming: not a pause
                    continue
                self._since = seen = 0
                frames = _checkpoint(conn)
                self.checkpoints += 1
                chasing = frames >= CHASE_FRAMES
                self._overdue = frames > WAL_LIMIT_FRAMES
        finally:
            conn.close()


def _checkpoint(conn: sqlite3.Connection) -> int:
    """A PASSIVE checkpoint; the frames in the WAL (0 if it failed)."""
    try:
        # The sqlite3 module lets go of the GIL while SQLite copies pages: the loop runs on.
        # fetchall, not fetchone: a statement left unfinished would keep a read mark on the
        # WAL, and a WAL with a reader on it is never restarted.
        ((_, frames, _),) = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    except sqlite3.Error as exc:
        log.warning("WAL checkpoint failed (it is retried after the next commits): %s", exc)
        return 0
    return int(frames)
