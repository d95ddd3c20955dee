"""SqliteEngine: one writer thread that group-commits mutations, and a pool of snapshot readers.

Mutations queue up for the writer thread. It takes every mutation waiting, opens one
`BEGIN IMMEDIATE` transaction, runs each in a SAVEPOINT of its own (a mutation that
raises is rolled back alone), gives each success the next version number, and commits
once: under load many mutations share one fsync, each still atomic on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..errors import InternalError, ServiceUnavailable
from .migrations import Migration, apply_migrations
from .reads import ReadSet
from .schema import TableSchema
from .sync import SyncReport, sync_schema
from .transaction import Change, Transaction

log = logging.getLogger(__name__)
T = TypeVar("T")


class Durability(enum.StrEnum):
    """`full` fsyncs every commit (survives power loss); `normal` survives a process crash."""

    NORMAL = "normal"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class ReadResult(Generic[T]):
    value: T
    version: int
    read_set: ReadSet


@dataclass(frozen=True, slots=True)
class WriteResult(Generic[T]):
    value: T
    version: int
    changes: list[Change]


@dataclass(frozen=True, slots=True)
class Commit:
    """What one mutation changed, announced to commit listeners after the commit is durable."""

    version: int
    changes: list[Change]
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Job:
    fn: Callable[[Transaction], Any]
    future: Future[Any] | asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop | None
    outcome: Any = None  # a WriteResult, a ReadResult or the exception raised


@dataclass(slots=True)
class EngineStats:
    """Counters of the writer: `group_commits` < `mutations` means mutations shared an fsync."""

    mutations: int = 0
    failed_mutations: int = 0
    group_commits: int = 0
    largest_batch: int = 0


@dataclass(frozen=True, slots=True)
class OpenReport:
    migrations: list[Migration]
    sync: SyncReport


_STOP = object()


def connect(path: Path, durability: Durability, *, readonly: bool = False) -> sqlite3.Connection:
    """Open a connection with the pragmas every connection needs, in the order they must run."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    # WAL first: it is a property of the file and lets readers run beside the one writer.
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL fsyncs the WAL at each commit; NORMAL only at checkpoints (safe against a crash
    # of the process, not against power loss).
    conn.execute(f"PRAGMA synchronous={durability.value.upper()}")
    # Another process (the CLI) may hold the lock for a moment: wait rather than fail.
    conn.execute("PRAGMA busy_timeout=5000")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA temp_store=MEMORY")
    if readonly:
        # Readers can never write, whatever SQL reaches them.
        conn.execute("PRAGMA query_only=ON")
    return conn


class SqliteEngine:
    """The embedded engine: one file, one writer thread, `readers` snapshot reader threads."""

    def __init__(
        self,
        path: Path,
        *,
        durability: Durability = Durability.FULL,
        readers: int = 4,
        max_batch: int = 128,
    ) -> None:
        self.path = path
        self.durability = durability
        self.max_batch = max_batch
        self.tables: dict[str, TableSchema] = {}
        self._version = 0
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._conn: sqlite3.Connection | None = None
        self._reader_count = readers
        self._read_queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._reader_threads: list[threading.Thread] = []
        self._listeners: list[Callable[[list[Commit]], None]] = []
        self._closed = False
        self.stats = EngineStats()

    @property
    def version(self) -> int:
        """The version of the last commit."""
        return self._version

    def open(self, tables: Iterable[TableSchema] = (), migrations: Iterable[Migration] = ()) -> OpenReport:
        """Create the file if needed, apply migrations and additive schema changes, start the writer."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(self.path, self.durability)
        try:
            self._init_meta(conn)
            ran = apply_migrations(conn, migrations)
            tables = list(tables)
            report = sync_schema(conn, tables)
        except BaseException:
            conn.close()
            raise
        self.tables = {t.name: t for t in tables}
        self._conn = conn
        self._version = int(conn.execute("SELECT value FROM _meta WHERE key='version'").fetchone()[0])
        self._writer = threading.Thread(target=self._write_loop, name="ntdb-writer", daemon=True)
        self._writer.start()
        self._start_readers()
        return OpenReport(ran, report)

    def _init_meta(self, conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE IF NOT EXISTS _meta (key TEXT PRIMARY KEY, value)")
        conn.execute("INSERT OR IGNORE INTO _meta (key, value) VALUES ('version', 0)")

    def on_commit(self, listener: Callable[[list[Commit]], None]) -> None:
        """Call `listener` on the writer thread after each group commit, with its commits in order."""
        self._listeners.append(listener)

    # -- writes ---------------------------------------------------------------

    async def write(self, fn: Callable[[Transaction], T]) -> WriteResult[T]:
        """Run `fn` in a write transaction on the writer thread; its changes commit or vanish whole."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[WriteResult[T]] = loop.create_future()
        self._submit(_Job(fn, fut, loop))
        return await fut

    def write_sync(self, fn: Callable[[Transaction], T]) -> WriteResult[T]:
        fut: Future[WriteResult[T]] = Future()
        self._submit(_Job(fn, fut, None))
        return fut.result()

    def _submit(self, job: _Job) -> None:
        if self._closed or self._writer is None:
            raise ServiceUnavailable("The database is closed.")
        self._queue.put(job)

    def _write_loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stop = self._drain_into(batch)
            self._run_batch(batch)
            if stop:
                return

    def _drain_into(self, batch: list[_Job]) -> bool:
        while len(batch) < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                return False
            if job is _STOP:
                return True
            batch.append(job)
        return False

    def _run_batch(self, batch: list[_Job]) -> None:
        conn = self._conn
        assert conn is not None
        version = self._version
        commits: list[Commit] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in batch:
                version = self._run_job(conn, job, version, commits, solo=len(batch) == 1)
            if version != self._version:
                conn.execute("UPDATE _meta SET value = ? WHERE key = 'version'", (version,))
            if conn.in_transaction:
                conn.execute("COMMIT")
            self._count(batch, commits)
        except sqlite3.Error as exc:
            log.exception("group commit failed")
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            failure = InternalError("The write could not be committed.")
            failure.__cause__ = exc
            for job in batch:
                job.outcome = failure
            commits = []
            version = self._version
        self._version = version
        self._resolve(batch)
        self._announce(commits)

    def _count(self, batch: list[_Job], commits: list[Commit]) -> None:
        self.stats.group_commits += 1
        self.stats.mutations += len(commits)
        self.stats.failed_mutations += len(batch) - len(commits)
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))

    def _run_job(self, conn: sqlite3.Connection, job: _Job, version: int, commits: list[Commit], solo: bool) -> int:
        # A mutation alone in its batch needs no savepoint: rolling back the transaction undoes it.
        if not solo:
            conn.execute("SAVEPOINT mutation")
        tx = Transaction(conn, self.tables, writable=True)
        try:
            value = job.fn(tx)
        except BaseException as exc:
            conn.execute("ROLLBACK" if solo else "ROLLBACK TO mutation")
            if not solo:
                conn.execute("RELEASE mutation")
            job.outcome = exc
            return version
        if not solo:
            conn.execute("RELEASE mutation")
        version += 1
        job.outcome = WriteResult(value, version, tx.changes)
        commits.append(Commit(version, tx.changes))
        return version

    def _resolve(self, batch: list[_Job]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in batch:
            if job.loop is None:
                _settle(job)
            else:
                by_loop.setdefault(job.loop, []).append(job)
        for loop, jobs in by_loop.items():
            # One wake-up of the event loop per batch, not one per mutation.
            # A loop closed while we were committing has nobody waiting on it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle_all, jobs)

    def _announce(self, commits: list[Commit]) -> None:
        if not commits:
            return
        for listener in self._listeners:
            try:
                listener(commits)
            except Exception:
                log.exception("commit listener failed")

    # -- reads ----------------------------------------------------------------

    async def read(self, fn: Callable[[Transaction], T]) -> ReadResult[T]:
        """Run `fn` on a reader thread inside one read transaction: a consistent snapshot."""
        if self._closed:
            raise ServiceUnavailable("The database is closed.")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ReadResult[T]] = loop.create_future()
        self._read_queue.put(_Job(fn, fut, loop))
        return await fut

    def read_sync(self, fn: Callable[[Transaction], T]) -> ReadResult[T]:
        if self._closed:
            raise ServiceUnavailable("The database is closed.")
        fut: Future[ReadResult[T]] = Future()
        self._read_queue.put(_Job(fn, fut, None))
        return fut.result()

    def _start_readers(self) -> None:
        # Plain threads fed by a queue: waking the event loop with call_soon_threadsafe costs a
        # third of what run_in_executor does, which matters for small queries.
        for i in range(self._reader_count):
            thread = threading.Thread(target=self._read_loop, name=f"ntdb-reader-{i}", daemon=True)
            thread.start()
            self._reader_threads.append(thread)

    def _read_loop(self) -> None:
        conn = connect(self.path, self.durability, readonly=True)
        try:
            while (job := self._read_queue.get()) is not _STOP:
                try:
                    job.outcome = self._read(conn, job.fn)
                except BaseException as exc:
                    job.outcome = exc
                self._resolve([job])
        finally:
            conn.close()

    def _read(self, conn: sqlite3.Connection, fn: Callable[[Transaction], T]) -> ReadResult[T]:
        conn.execute("BEGIN")
        try:
            # The first SELECT fixes the snapshot, so the version matches what fn sees.
            version = int(conn.execute("SELECT value FROM _meta WHERE key='version'").fetchone()[0])
            tx = Transaction(conn, self.tables, writable=False)
            value = fn(tx)
        finally:
            conn.execute("COMMIT")
        return ReadResult(value, version, tx.read_set)

    # -- shutdown -------------------------------------------------------------

    def close(self) -> None:
        """Finish every queued write, then close all connections and fold the WAL into the file."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._queue.put(_STOP)
            self._writer.join()
        for _ in self._reader_threads:
            self._read_queue.put(_STOP)
        for thread in self._reader_threads:
            thread.join()
        if self._conn is not None:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self._conn.close()


def _settle(job: _Job) -> None:
    fut = job.future
    if fut.done():
        return
    if isinstance(job.outcome, BaseException):
        fut.set_exception(job.outcome)
    else:
        fut.set_result(job.outcome)


def _settle_all(jobs: list[_Job]) -> None:
    for job in jobs:
        _settle(job)
