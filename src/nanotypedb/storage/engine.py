"""SqliteEngine: serialized, group-committed writes and snapshot reads on one SQLite file.

Writes: mutations queue up; one writer task takes every mutation waiting, opens one
`BEGIN IMMEDIATE` transaction, runs each in a SAVEPOINT of its own (a mutation that
raises is rolled back alone), gives each success the next version number, writes the
audit entries of the successes' changes (storage/audit.py), and commits once, so under
load many mutations share one fsync. At durability `full` the COMMIT (the fsync) runs on
a commit thread, and the event loop keeps parsing requests, which form the next batch
meanwhile.

Why the bodies run on the event loop thread rather than a writer thread: on the 2-core
machines we measure on, handing every mutation to a thread and back cost 20-80 % of
throughput (thread wake-ups, and the GIL taken back after each sqlite3 call). A
mutation is short synchronous code; slow work belongs in actions.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import queue
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..errors import InternalError, ServiceUnavailable, StorageError
from .audit import AuditLog
from .checkpoint import Checkpointer
from .migrations import Migration, apply_migrations
from .reads import ReadSet
from .schema import TableSchema
from .sync import SyncReport, sync_schema
from .transaction import Change, Transaction

log = logging.getLogger(__name__)
T = TypeVar("T")
# How long close() waits for the batch in flight (its COMMIT) before closing regardless.
CLOSE_WAIT_SECONDS = 10.0


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
class Failed:
    """A read that raised, with what it had read before it did (a live query re-runs on those)."""

    error: Exception
    read_set: ReadSet


@dataclass(frozen=True, slots=True)
class Commit:
    """What one mutation changed, announced to commit listeners after the commit is durable."""

    version: int
    changes: list[Change]
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class EngineStats:
    """Counters of the writer: `group_commits` < `mutations` means mutations shared an fsync."""

    mutations: int = 0
    failed_mutations: int = 0
    group_commits: int = 0
    largest_batch: int = 0


@dataclass(slots=True)
class _Job:
    fn: Callable[[Transaction], Any]
    versioned: bool = True  # False: bookkeeping (claiming a job, say) that no client sees as a commit
    outcome: Any = None  # a WriteResult, or the exception the mutation raised


@dataclass(frozen=True, slots=True)
class OpenReport:
    migrations: list[Migration]
    sync: SyncReport


@contextlib.contextmanager
def opening(path: Path) -> Iterator[None]:
    """At start-up, SQLite's refusal to open a file (damaged, not a database, not readable)
    becomes a StorageError that names the file: the operator sees one line, not a traceback."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        raise StorageError(
            f"Cannot open the database file {path}: {exc}. If it is damaged, restore it from a backup "
            "(docs/operations.md) or move it aside: a missing file is created empty."
        ) from exc


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


class _Committer:
    """A thread that runs COMMIT (and so the fsync) while the event loop goes on."""

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="ntdb-commit", daemon=True)
        self._thread.start()

    async def commit(self, conn: sqlite3.Connection) -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._jobs.put((conn, loop, fut))
        await fut

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            conn, loop, fut = job
            try:
                conn.execute("COMMIT")
                outcome: BaseException | None = None
            except BaseException as exc:
                outcome = exc
            with contextlib.suppress(RuntimeError):  # a closed loop has nobody waiting
                loop.call_soon_threadsafe(_settle, fut, outcome)

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join()


def _settle(fut: asyncio.Future[None], outcome: BaseException | None) -> None:
    if not fut.done():
        if outcome is None:
            fut.set_result(None)
        else:
            fut.set_exception(outcome)


class SqliteEngine:
    """The embedded engine: one file, one write connection, a read connection per reading thread."""

    def __init__(
        self,
        path: Path,
        *,
        durability: Durability = Durability.FULL,
        max_batch: int = 256,
        audit: AuditLog | None = None,
    ) -> None:
        self.path = path
        self.audit = audit  # None: no audit trail (the `audit` setting is off)
        self.durability = durability
        self.max_batch = max_batch
        self.tables: dict[str, TableSchema] = {}
        self.stats = EngineStats()
        self._version = 0
        self._conn: sqlite3.Connection | None = None
        # Held from BEGIN to COMMIT: writes from other threads (CLI, tests) wait their turn.
        self._write_lock = threading.Lock()
        self._pending: deque[tuple[_Job, asyncio.Future[Any]]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._writer_task: asyncio.Task[None] | None = None
        self._committer: _Committer | None = None
        self._checkpointer: Checkpointer | None = None
        self._local = threading.local()
        self._read_conns: list[sqlite3.Connection] = []
        self._read_lock = threading.Lock()
        self._listeners: list[Callable[[list[Commit]], None]] = []
        self._closed = False  # no new writes or reads
        self._shut = False  # connections closed (set under the write lock)

    @property
    def version(self) -> int:
        """The version of the last commit."""
        return self._version

    @property
    def checkpoints(self) -> tuple[int, int]:
        """WAL checkpoints run (by the checkpoint thread, by the writer when the WAL outgrew its limit)."""
        c = self._checkpointer
        return (c.checkpoints, c.fallbacks) if c is not None else (0, 0)

    @property
    def is_open(self) -> bool:
        """Opened (migrations and schema applied) and not yet closed."""
        return self._conn is not None and not self._closed

    def open(
        self, tables: Iterable[TableSchema] = (), migrations: Iterable[Migration] = (), system: Iterable[str] = ()
    ) -> OpenReport:
        """Create the file if needed, the system tables (`system`: DDL), then apply migrations and
        additive schema changes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with opening(self.path):
            conn = connect(self.path, self.durability)
        tables = list(tables)
        try:
            ran, report = _prepare(conn, tables, migrations, system, self.audit)
        except BaseException:
            conn.close()
            raise
        self.tables = {t.name: t for t in tables}
        self._conn = conn
        self._version = int(conn.execute("SELECT value FROM _meta WHERE key='version'").fetchone()[0])
        if self.durability is Durability.FULL:
            self._committer = _Committer()
        # The writer would checkpoint inside some COMMIT, on the event loop: a thread does it.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = Checkpointer(lambda: connect(self.path, self.durability))
        return OpenReport(ran, report)

    def on_commit(self, listener: Callable[[list[Commit]], None]) -> None:
        """Call `listener` after each group commit, with its commits in version order.

        It runs on the thread that wrote: the event loop's for `write`, the caller's for `write_sync`.
        """
        self._listeners.append(listener)

    # -- writes ---------------------------------------------------------------

    async def write(
        self, fn: Callable[[Transaction], T], *, alone: bool = False, versioned: bool = True
    ) -> WriteResult[T]:
        """Run `fn` in a write transaction; its changes commit or vanish whole.

        `alone` says no other call is in progress: with nothing to batch it with, and a
        COMMIT that does not fsync, the mutation runs at once instead of waiting for the
        writer task's next turn (a third of a single client's round trip, measured).
        """
        self._check_open()
        if alone and self._committer is None and not self._pending and not self._write_lock.locked():
            return self.write_sync(fn, versioned=versioned)
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._start_writer(loop)
        elif loop is not self._loop:
            # One writer task lives on one loop; another loop's writes go through a thread.
            return await asyncio.to_thread(self.write_sync, fn, versioned=versioned)
        fut: asyncio.Future[WriteResult[T]] = loop.create_future()
        self._pending.append((_Job(fn, versioned), fut))
        assert self._wake is not None
        self._wake.set()
        return await fut

    def write_sync(self, fn: Callable[[Transaction], T], *, versioned: bool = True) -> WriteResult[T]:
        """Write from a thread with no event loop (the CLI, tests): the same transaction rules."""
        self._check_open()
        job = _Job(fn, versioned)
        with self._write_lock:
            commits = self._run_bodies([job])
            self._commit_now(commits)
        self._after_commit([job], commits)
        if isinstance(job.outcome, BaseException):
            raise job.outcome
        result: WriteResult[T] = job.outcome
        return result

    def _start_writer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._wake = asyncio.Event()
        self._writer_task = loop.create_task(self._write_loop(), name="ntdb-writer")

    def _check_open(self) -> None:
        if self._closed or self._conn is None:
            raise ServiceUnavailable("The database is closed.")

    async def _write_loop(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                n = min(len(self._pending), self.max_batch)
                await self._run_batch([self._pending.popleft() for _ in range(n)])

    async def _run_batch(self, batch: list[tuple[_Job, asyncio.Future[Any]]]) -> None:
        jobs = [job for job, _ in batch]
        with self._write_lock:
            if self._shut:
                # close() ran while this batch waited for the lock: it never started.
                for job in jobs:
                    job.outcome = ServiceUnavailable("The server shut down before this write ran.")
                commits = []
            else:
                commits = self._run_bodies(jobs)
                if self._committer is not None and self._conn is not None and self._conn.in_transaction:
                    commits = await self._commit_in_thread(jobs, commits)
                else:
                    self._commit_now(commits, jobs)
        for job, fut in batch:
            if not fut.done():
                if isinstance(job.outcome, BaseException):
                    fut.set_exception(job.outcome)
                else:
                    fut.set_result(job.outcome)
        self._after_commit(jobs, commits)

    def _run_bodies(self, jobs: list[_Job]) -> list[Commit]:
        """BEGIN, run every mutation in order, write their audit entries, record the new version;
        the caller commits."""
        conn = self._conn
        assert conn is not None
        commits: list[Commit] = []
        audited: list[Transaction] = []  # the transactions of the mutations that succeeded, with changes
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = self._catch_up(conn, commits)
            for job in jobs:
                version = self._run_job(conn, job, version, commits, audited, solo=len(jobs) == 1)
            if audited and self.audit is not None:
                # Once per batch, in its transaction: what commits has its entries, and a mutation
                # rolled back to its savepoint never made it into `audited`.
                self.audit.append_many(conn, [(tx.origin, [*tx.changes, *tx.acts]) for tx in audited])
            if commits:
                conn.execute("UPDATE _meta SET value = ? WHERE key = 'version'", (version,))
        except Exception as exc:
            # Not only sqlite3.Error: an audit entry that cannot be written fails the batch too,
            # so that no change commits without its entry.
            self._fail(jobs, exc)
            return []
        return commits

    def _run_job(
        self,
        conn: sqlite3.Connection,
        job: _Job,
        version: int,
        commits: list[Commit],
        audited: list[Transaction],
        solo: bool,
    ) -> int:
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
        if tx.changes or tx.acts:
            audited.append(tx)
        if not job.versioned:
            job.outcome = WriteResult(value, version, tx.changes)
            return version
        version += 1
        job.outcome = WriteResult(value, version, tx.changes)
        info: dict[str, Any] = {"jobs": tx.enqueued} if tx.enqueued else {}
        if tx.origin is not None and tx.origin.request_id:
            info["request"] = tx.origin.request_id  # the live hub holds its caller's transitions until the reply
        commits.append(Commit(version, tx.changes, info))
        return version

    def _catch_up(self, conn: sqlite3.Connection, commits: list[Commit]) -> int:
        """The version in the file, inside the write transaction: another process (`nanotypedb
        worker`, the CLI) may have committed since. Its changes are unknown here, so listeners
        hear of them as one `external` commit and drop everything they derived."""
        version = int(conn.execute("SELECT value FROM _meta WHERE key='version'").fetchone()[0])
        if version != self._version:
            commits.append(Commit(version, [], {"external": True}))
        return version

    def _commit_now(self, commits: list[Commit], jobs: list[_Job] | None = None) -> None:
        conn = self._conn
        assert conn is not None
        if not conn.in_transaction:
            return
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._fail(jobs or [], exc)
            commits.clear()
            return
        self._committed(commits)

    async def _commit_in_thread(self, jobs: list[_Job], commits: list[Commit]) -> list[Commit]:
        assert self._committer is not None and self._conn is not None
        try:
            await self._committer.commit(self._conn)
        except sqlite3.Error as exc:
            self._fail(jobs, exc)
            return []
        self._committed(commits)
        return commits

    def _committed(self, commits: list[Commit]) -> None:
        if commits:
            self._version = commits[-1].version
            if self._checkpointer is not None and self._conn is not None:
                self._checkpointer.committed(self._conn)

    def _fail(self, jobs: list[_Job], exc: Exception) -> None:
        """A failed BEGIN or COMMIT loses the whole batch: roll back, and tell every caller."""
        log.error("group commit failed", exc_info=exc)
        conn = self._conn
        if conn is not None and conn.in_transaction:
            conn.execute("ROLLBACK")
        for job in jobs:
            failure = InternalError("The write could not be committed.")
            failure.__cause__ = exc
            job.outcome = failure

    def _after_commit(self, jobs: list[_Job], commits: list[Commit]) -> None:
        self.stats.group_commits += 1
        self.stats.mutations += sum(1 for c in commits if not c.info.get("external"))
        self.stats.failed_mutations += sum(1 for job in jobs if isinstance(job.outcome, BaseException))
        self.stats.largest_batch = max(self.stats.largest_batch, len(jobs))
        if commits:
            self._announce(commits)

    def _announce(self, commits: list[Commit]) -> None:
        for listener in self._listeners:
            try:
                listener(commits)
            except Exception:
                log.exception("commit listener failed")

    def check_external(self) -> bool:
        """Announce commits another process made while this one wrote nothing (called on a timer).

        Skipped while a write is in progress: that write catches up by itself (`_catch_up`).
        """
        if self._conn is None or self._shut or not self._write_lock.acquire(blocking=False):
            return False
        try:
            version = int(self._conn.execute("SELECT value FROM _meta WHERE key='version'").fetchone()[0])
            if version == self._version:
                return False
            self._version = version
        finally:
            self._write_lock.release()
        self._announce([Commit(version, [], {"external": True})])
        return True

    # -- reads ----------------------------------------------------------------

    async def read(self, fn: Callable[[Transaction], T]) -> ReadResult[T]:
        """Run `fn` inside one read transaction: a consistent snapshot, tagged with its version.

        It runs right here on the event loop thread, on that thread's own read connection:
        a thread hop per query costs more than a typical query (see the module docstring).
        """
        return self.read_sync(fn)

    def read_sync(self, fn: Callable[[Transaction], T]) -> ReadResult[T]:
        with self._snapshot() as (conn, version):
            tx = Transaction(conn, self.tables, writable=False)
            value = fn(tx)
        return ReadResult(value, version, tx.read_set)

    def read_many(self, fns: Sequence[Callable[[Transaction], T]]) -> tuple[int, list[ReadResult[T] | Failed]]:
        """Run each of `fns` in ONE snapshot; one that raises gives a Failed (with what it read so far)."""
        results: list[ReadResult[T] | Failed] = []
        with self._snapshot() as (conn, version):
            for fn in fns:
                tx = Transaction(conn, self.tables, writable=False)
                try:
                    results.append(ReadResult(fn(tx), version, tx.read_set))
                except Exception as exc:
                    results.append(Failed(exc, tx.read_set))
        return version, results

    @contextlib.contextmanager
    def _snapshot(self) -> Iterator[tuple[sqlite3.Connection, int]]:
        self._check_open()
        conn = self._reader()
        conn.execute("BEGIN")
        try:
            # The first SELECT fixes the snapshot, so the version matches what is read after it.
            yield conn, int(conn.execute("SELECT value FROM _meta WHERE key='version'").fetchone()[0])
        finally:
            conn.execute("COMMIT")

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, self.durability, readonly=True)
            self._local.conn = conn
            with self._read_lock:
                self._read_conns.append(conn)
        return conn

    # -- shutdown -------------------------------------------------------------

    def close(self) -> None:
        """Finish the batch in flight, fail the writes still queued, close every connection and
        fold the WAL into the file. Every write gets an answer: committed, or ServiceUnavailable."""
        if self._closed:
            return
        self._closed = True
        # The batch in flight holds the lock until its commit is done and its callers told.
        acquired = self._write_lock.acquire(timeout=CLOSE_WAIT_SECONDS)
        try:
            self._fail_queued()
            if self._committer is not None:
                self._committer.stop()
            if self._checkpointer is not None:
                self._checkpointer.stop()
            with self._read_lock:
                for conn in self._read_conns:
                    conn.close()
            if self._conn is not None:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._conn.close()
            self._shut = True
        finally:
            if acquired:
                self._write_lock.release()

    def _fail_queued(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self._pending.clear()  # a closed loop has nobody left waiting on these
            return
        # The queue belongs to the loop's thread: empty it there.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._drain_refused)

    def _drain_refused(self) -> None:
        while self._pending:
            _, fut = self._pending.popleft()
            _fail_future(fut, ServiceUnavailable("The server shut down before this write ran."))
        if self._writer_task is not None:
            self._writer_task.cancel()  # idle now: close() waited for the batch in flight


def _fail_future(fut: asyncio.Future[Any], exc: BaseException) -> None:
    if not fut.done():
        fut.set_exception(exc)


def _prepare(
    conn: sqlite3.Connection,
    tables: list[TableSchema],
    migrations: Iterable[Migration],
    system: Iterable[str],
    audit: AuditLog | None,
) -> tuple[list[Migration], SyncReport]:
    """What every open does to a file: `_meta`, the system tables, the pending migrations (each with its
    entry in this file's audit chain, when `audit` is given), the additive schema."""
    conn.execute("CREATE TABLE IF NOT EXISTS _meta (key TEXT PRIMARY KEY, value)")
    conn.execute("INSERT OR IGNORE INTO _meta (key, value) VALUES ('version', 0)")
    for ddl in system:
        conn.execute(ddl)
    return apply_migrations(conn, migrations, audit), sync_schema(conn, tables)


def migrate(
    path: Path,
    tables: Iterable[TableSchema] = (),
    migrations: Iterable[Migration] = (),
    system: Iterable[str] = (),
    audit: AuditLog | None = None,
) -> OpenReport:
    """Bring the database at `path` up to date as `SqliteEngine.open` would, without keeping it open: start-up
    does this to every environment besides its own, whose server (if one runs) may be using the file.
    `audit`: the log of that file's environment, so that its migrations are recorded in its own chain."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect(path, Durability.FULL)
    try:
        return OpenReport(*_prepare(conn, list(tables), migrations, system, audit))
    finally:
        conn.close()
