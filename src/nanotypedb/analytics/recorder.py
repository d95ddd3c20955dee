"""Recorder: hears every call and commit of one server, and flushes the counts to analytics.sqlite3 in a thread.

Counting is a dict increment on the event loop thread. Every `flush` seconds the loop takes the
batch (a swap, no lock) and a worker thread adds it to the file, so no SQLite call runs on the
loop. A crash loses at most the counts since the last flush; a clean stop flushes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..storage.analytics import AnalyticsStore
from ..storage.engine import Commit
from . import query
from .aggregator import Aggregator, Batch

log = logging.getLogger(__name__)
DAY = 86400


class Recorder:
    """The analytics of one process: an Aggregator in memory, an AnalyticsStore on disk, a flush timer."""

    def __init__(
        self,
        path: Path,
        known: Callable[[str], bool],
        *,
        flush: float,
        retention_days: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if flush <= 0:
            raise ConfigError(f"--analytics-flush must be a number of seconds above 0, not {flush}.")
        if retention_days < 1:
            raise ConfigError(f"--analytics-retention-days must be at least 1, not {retention_days}.")
        self.store = AnalyticsStore(path)
        self.aggregator = Aggregator(known, clock)
        self.flush_seconds = flush
        self.retention_days = retention_days
        self.clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._timer: asyncio.Task[None] | None = None
        # Flushes and reads take turns: a read sees the in-memory batch or the stored rows, never both.
        self._turn = asyncio.Lock()  # binds to the loop that first waits on it

    def open(self) -> None:
        """Open (or create) the file and delete what is older than the retention."""
        self.store.open()
        self.store.prune(self._keep_from())

    def observe(self, function: str, status: str, seconds: float, caller: str) -> None:
        """A Runtime observer: counts one call (on the event loop thread, where calls run)."""
        self.aggregator.call(function, status, seconds, caller)

    def on_commit(self, commits: list[Commit]) -> None:
        """A commit listener: counts the rows changed. Commits written from other threads (a job's
        `write_sync`) are counted on the loop, which alone touches the aggregator."""
        at = self.clock()
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            with contextlib.suppress(RuntimeError):  # the loop closed: the server is gone
                loop.call_soon_threadsafe(self.aggregator.commit, commits, at)
            return
        self.aggregator.commit(commits, at)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._timer = self._loop.create_task(self._tick(), name="ntdb-analytics-flush")

    async def stop(self) -> None:
        """Stop the timer and flush what is left (a clean shutdown loses nothing)."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        await self.flush()
        self._loop = None

    def close(self) -> None:
        """Write what was counted without a running loop (or after it stopped), then close the file."""
        batch = self.aggregator.take()
        if batch:
            self._write(batch)
        self.store.close()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            # Shielded: a stop during a flush lets it finish; stop's own flush then waits its turn.
            await asyncio.shield(self.flush())

    async def flush(self) -> None:
        """Take the batch on the loop and add it to the file in a worker thread."""
        async with self._turn:
            batch = self.aggregator.take()
            if batch:
                try:
                    await asyncio.to_thread(self._write, batch)
                except Exception:
                    log.exception("writing analytics to %s failed; the next flush tries again", self.store.path)
                    self.aggregator.restore(batch)

    def _write(self, batch: Batch) -> None:
        self.store.add(batch.call_rows(), batch.change_rows(), self._keep_from())

    def _keep_from(self) -> int:
        return int(self.clock()) - self.retention_days * DAY

    async def read(self, request: query.Request) -> dict[str, Any]:
        """The series `request` asks for: the stored rows plus the counts not flushed yet."""
        async with self._turn:
            pending = self.aggregator.pending
            if request.of_calls:
                memory: list[Any] = query.within(request, pending.call_rows())
                stored: list[Any] = await asyncio.to_thread(
                    self.store.calls, request.start, request.end, request.seconds
                )
                series = query.call_series(request, stored + memory)
            else:
                memory = query.within(request, pending.change_rows())
                stored = await asyncio.to_thread(self.store.changes, request.start, request.end, request.seconds)
                series = query.change_series(request, stored + memory)
        return query.reply(request, series)
