"""SqliteEngine on real files: atomic mutations, gapless versions, group commit, snapshots, read sets, close."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from nanotypedb import App, Ctx, Table, column, owner_policy
from nanotypedb.errors import ServiceUnavailable
from nanotypedb.storage.engine import Commit, Durability, SqliteEngine, WriteResult
from nanotypedb.storage.query import Select, compare
from nanotypedb.storage.reads import TableRead
from nanotypedb.storage.transaction import Transaction
from nanotypedb.testing import serve


class Entry(Table, table="entries"):
    label: str
    code: str | None = column(None, unique=True)


class Tally(Table, table="tallies"):
    label: str


TABLES = (Entry.__schema__, Tally.__schema__)
WRITERS = 50
EACH = 4


class Boom(Exception):
    """What a mutation with a bug raises."""


@pytest.fixture(params=list(Durability), ids=str)
def durability(request: pytest.FixtureRequest) -> Durability:
    return Durability(request.param)


@contextmanager
def opened(path: Path, durability: Durability = Durability.FULL) -> Iterator[SqliteEngine]:
    engine = SqliteEngine(path, durability=durability)
    engine.open(TABLES)
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture
def engine(tmp_path: Path, durability: Durability) -> Iterator[SqliteEngine]:
    with opened(tmp_path / "db.sqlite3", durability) as engine:
        yield engine


def add(label: str, code: str | None = None) -> Callable[[Transaction], dict[str, Any]]:
    """A mutation that inserts one entry and one tally, so counts track the version."""

    def run(tx: Transaction) -> dict[str, Any]:
        tx.insert(tx.table("tallies"), {"label": label})
        return tx.insert(tx.table("entries"), {"label": label, "code": code})

    return run


def add_then_fail(label: str) -> Callable[[Transaction], None]:
    """A mutation that writes to both tables, changes an existing row, then raises."""

    def run(tx: Transaction) -> None:
        tx.insert(tx.table("entries"), {"label": label})
        tx.insert(tx.table("tallies"), {"label": label})
        tx.conn.execute("UPDATE entries SET label = 'changed'")
        raise Boom(label)

    return run


def labels(engine: SqliteEngine, table: str = "entries") -> list[str]:
    rows = engine.read_sync(lambda tx: tx.select(Select(tx.table(table), order=(("id", False),)))).value
    return [r["label"] for r in rows]


def counts(tx: Transaction) -> tuple[int, int]:
    return tx.count(Select(tx.table("entries"))), tx.count(Select(tx.table("tallies")))


# -- a mutation that raises leaves no trace -------------------------------------


def test_a_mutation_that_raises_alone_leaves_no_trace(engine: SqliteEngine) -> None:
    assert engine.write_sync(add("kept")).version == 1
    with pytest.raises(Boom):
        engine.write_sync(add_then_fail("lost"))
    assert labels(engine) == ["kept"] and labels(engine, "tallies") == ["kept"]
    assert engine.version == 1 and engine.read_sync(counts).version == 1
    assert engine.write_sync(add("next")).version == 2  # the failure used up no version


def test_an_async_mutation_that_raises_leaves_no_trace(engine: SqliteEngine) -> None:
    async def main() -> None:
        await engine.write(add("kept"), alone=True)
        for alone in (True, False):
            with pytest.raises(Boom):
                await engine.write(add_then_fail("lost"), alone=alone)
        assert (await engine.write(add("next"))).version == 2

    asyncio.run(main())
    assert labels(engine) == ["kept", "next"] and labels(engine, "tallies") == ["kept", "next"]
    assert engine.stats.failed_mutations == 2


def test_in_a_group_commit_only_the_mutations_that_raise_roll_back(engine: SqliteEngine) -> None:
    fails = [i % 3 == 1 for i in range(30)]

    async def main() -> list[Any]:
        calls = [engine.write(add_then_fail(f"bad {i}") if bad else add(f"ok {i}")) for i, bad in enumerate(fails)]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert engine.stats.largest_batch > 1  # they did share a transaction, one savepoint each
    assert [isinstance(o, Boom) for o in outcomes] == fails
    kept = [o for o in outcomes if isinstance(o, WriteResult)]
    assert [r.version for r in kept] == list(range(1, 21))  # queue order, no gaps for failures
    assert labels(engine) == [f"ok {i}" for i, bad in enumerate(fails) if not bad]
    assert labels(engine, "tallies") == labels(engine)
    assert engine.version == 20 and engine.read_sync(counts).version == 20
    assert engine.stats.failed_mutations == 10 and engine.stats.mutations == 20


def test_a_constraint_violation_rolls_back_only_its_own_mutation(engine: SqliteEngine) -> None:
    async def main() -> list[Any]:
        calls = [engine.write(add(f"e{i}", code="same" if i % 2 else None)) for i in range(6)]
        return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert [isinstance(o, sqlite3.IntegrityError) for o in outcomes] == [False, False, False, True, False, True]
    assert all(isinstance(o, WriteResult) for o in outcomes[:3])
    assert labels(engine) == ["e0", "e1", "e2", "e4"] and labels(engine, "tallies") == labels(engine)
    assert engine.version == 4


def test_commit_listeners_hear_only_successes_in_version_order(engine: SqliteEngine) -> None:
    heard: list[Commit] = []
    engine.on_commit(heard.extend)

    async def main() -> None:
        await asyncio.gather(
            *(engine.write(add_then_fail("x") if i == 2 else add(str(i))) for i in range(5)), return_exceptions=True
        )

    asyncio.run(main())
    engine.write_sync(add("sync"))
    assert [c.version for c in heard] == [1, 2, 3, 4, 5]
    first = heard[0].changes
    assert [(ch.table, ch.op, ch.after and ch.after["label"]) for ch in first] == [
        ("tallies", "insert", "0"),
        ("entries", "insert", "0"),
    ]
    assert all(ch.after and ch.after["label"] != "x" for c in heard for ch in c.changes)


# -- concurrent writers -----------------------------------------------------------


def _check_gapless(per_writer: list[list[int]], engine: SqliteEngine) -> None:
    versions = sorted(v for vs in per_writer for v in vs)
    assert versions == list(range(1, WRITERS * EACH + 1))  # no gaps, no repeats
    assert all(vs == sorted(vs) for vs in per_writer)  # each writer's versions only increase
    assert sorted(labels(engine)) == sorted(f"{w}-{i}" for w in range(WRITERS) for i in range(EACH))
    assert engine.version == WRITERS * EACH


def test_fifty_async_writers_lose_nothing(engine: SqliteEngine) -> None:
    async def writer(w: int) -> list[int]:
        return [(await engine.write(add(f"{w}-{i}"))).version for i in range(EACH)]

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(writer(w) for w in range(WRITERS)))

    _check_gapless(asyncio.run(main()), engine)


def test_fifty_writer_threads_lose_nothing(engine: SqliteEngine) -> None:
    per_writer: list[list[int]] = [[] for _ in range(WRITERS)]

    def writer(w: int) -> None:
        for i in range(EACH):
            per_writer[w].append(engine.write_sync(add(f"{w}-{i}")).version)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _check_gapless(per_writer, engine)


def test_threads_and_async_writers_together_lose_nothing(engine: SqliteEngine) -> None:
    per_writer: list[list[int]] = [[] for _ in range(WRITERS)]
    half = WRITERS // 2

    def thread_writer(w: int) -> None:
        for i in range(EACH):
            per_writer[w].append(engine.write_sync(add(f"{w}-{i}")).version)

    async def async_writer(w: int) -> None:
        for i in range(EACH):
            per_writer[w].append((await engine.write(add(f"{w}-{i}"))).version)

    async def main() -> None:
        threads = [threading.Thread(target=thread_writer, args=(w,)) for w in range(half, WRITERS)]
        for t in threads:
            t.start()
        await asyncio.gather(*(async_writer(w) for w in range(half)))
        await asyncio.to_thread(lambda: [t.join() for t in threads])

    asyncio.run(main())
    _check_gapless(per_writer, engine)


def test_concurrent_mutations_share_commits_at_full_durability(tmp_path: Path) -> None:
    with opened(tmp_path / "db.sqlite3", Durability.FULL) as engine:

        async def writer(w: int) -> None:
            for i in range(10):
                await engine.write(add(f"{w}-{i}"))

        async def main() -> None:
            await asyncio.gather(*(writer(w) for w in range(20)))

        asyncio.run(main())
        stats = engine.stats
        assert stats.mutations == 200 and stats.failed_mutations == 0
        assert stats.group_commits < stats.mutations  # mutations shared a COMMIT, and so an fsync
        assert stats.largest_batch > 1


# -- reads ------------------------------------------------------------------------


def test_a_read_keeps_its_snapshot_while_a_write_commits(engine: SqliteEngine) -> None:
    engine.write_sync(add("before"))

    def read(tx: Transaction) -> tuple[tuple[int, int], tuple[int, int]]:
        first = counts(tx)
        writer = threading.Thread(target=engine.write_sync, args=(add("during"),))
        writer.start()
        writer.join()  # committed while this read is still open
        return first, counts(tx)

    result = engine.read_sync(read)
    assert result.value == ((1, 1), (1, 1)) and result.version == 1
    assert engine.read_sync(counts).value == (2, 2) and engine.version == 2


def test_every_read_during_writes_sees_one_consistent_snapshot(engine: SqliteEngine) -> None:
    seen: list[tuple[int, int, int]] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            read = engine.read_sync(counts)
            seen.append((*read.value, read.version))

    async def async_reader() -> list[tuple[int, int, int]]:
        mine = []
        while not done.is_set():
            read = await engine.read(counts)
            mine.append((*read.value, read.version))
            await asyncio.sleep(0)
        return mine

    async def main() -> list[tuple[int, int, int]]:
        thread = threading.Thread(target=reader)
        thread.start()
        task = asyncio.create_task(async_reader())
        await asyncio.gather(*(engine.write(add(str(i))) for i in range(150)))
        for i in range(50):
            await engine.write(add(f"one by one {i}"))
        done.set()
        await asyncio.to_thread(thread.join)
        return await task

    seen += asyncio.run(main())
    # Each mutation adds one row to each table: in any snapshot both counts equal the version.
    assert all(entries == tallies == version for entries, tallies, version in seen)
    assert len({version for *_, version in seen}) > 2  # the reads did run while the writes went on


def _reads(tx: Transaction) -> None:
    entries, tallies = tx.table("entries"), tx.table("tallies")
    tx.select(Select(entries, (compare(entries, "label", "=", "a"), compare(entries, "code", ">", "m"))))
    tx.select(Select(entries, (compare(entries, "label", "=", "a"),)))  # the same read, recorded once
    tx.count(Select(tallies))
    tx.get(entries, 5)


def test_a_read_records_the_tables_and_equality_filters_it_used(engine: SqliteEngine) -> None:
    read_set = engine.read_sync(_reads).read_set
    assert read_set.reads == [
        TableRead("entries", (("label", "a"),)),
        TableRead("tallies", (), frozenset()),  # a count with no filter depends on no column, only on which rows exist
        TableRead("entries", (("id", 5),)),
    ]
    assert read_set.tables == {"entries", "tallies"}


def test_null_and_in_filters_are_recorded_as_what_they_bind(engine: SqliteEngine) -> None:
    def read(tx: Transaction) -> None:
        entries = tx.table("entries")
        tx.select(Select(entries, (compare(entries, "code", "=", None), compare(entries, "label", "in", ["x"]))))
        tx.select(Select(entries, (compare(entries, "label", "in", ["x", "y"]),)))

    assert engine.read_sync(read).read_set.reads == [
        TableRead("entries", (("code", None),)),
        TableRead("entries", ()),  # `in` binds no single value: any row of the table may matter
    ]


def test_a_read_set_is_touched_only_by_changes_that_can_alter_it(engine: SqliteEngine) -> None:
    read_set = engine.read_sync(_reads).read_set
    assert read_set.touches("entries", {"id": 9, "label": "a", "code": "z"})
    assert read_set.touches("entries", {"id": 5, "label": "b", "code": "z"})
    assert not read_set.touches("entries", {"id": 6, "label": "b", "code": "z"})
    assert read_set.touches("tallies", {"id": 1, "label": "anything"})
    assert not read_set.touches("elsewhere", None)


def test_reads_cannot_write(engine: SqliteEngine) -> None:
    with pytest.raises(sqlite3.OperationalError):
        engine.read_sync(lambda tx: tx.conn.execute("INSERT INTO entries (label) VALUES ('sneaky')"))
    assert labels(engine) == []


@pytest.mark.parametrize(("durability", "synchronous"), [(Durability.NORMAL, 1), (Durability.FULL, 2)])
def test_durability_sets_synchronous_on_every_connection(
    tmp_path: Path, durability: Durability, synchronous: int
) -> None:
    def pragmas(tx: Transaction) -> tuple[int, str]:
        return tx.conn.execute("PRAGMA synchronous").fetchone()[0], tx.conn.execute("PRAGMA journal_mode").fetchone()[0]

    with opened(tmp_path / "db.sqlite3", durability) as engine:
        assert engine.write_sync(pragmas).value == (synchronous, "wal")
        assert engine.read_sync(pragmas).value == (synchronous, "wal")


# -- close and reopen -------------------------------------------------------------


def test_close_settles_every_queued_write_and_keeps_every_acknowledged_one(
    tmp_path: Path, durability: Durability
) -> None:
    path = tmp_path / "db.sqlite3"
    acknowledged: dict[str, int] = {}
    refused: list[str] = []

    async def one(engine: SqliteEngine, label: str) -> None:
        try:
            acknowledged[label] = (await engine.write(add(label))).version
        except ServiceUnavailable:
            refused.append(label)

    async def main(engine: SqliteEngine) -> set[asyncio.Task[None]]:
        tasks = [asyncio.create_task(one(engine, str(i))) for i in range(20)]
        for _ in range(3):
            await asyncio.sleep(0)  # let the writer take a batch and start its commit
        closer = threading.Thread(target=engine.close)
        closer.start()
        tasks += [asyncio.create_task(one(engine, f"late {i}")) for i in range(5)]
        _, unsettled = await asyncio.wait(tasks, timeout=2)
        for task in unsettled:
            task.cancel()
        await asyncio.to_thread(closer.join)
        return unsettled

    with opened(path, durability) as engine:
        unsettled = asyncio.run(main(engine))
    assert not unsettled, f"{len(unsettled)} writes got no answer after close()"
    assert len(acknowledged) + len(refused) == 25
    with opened(path, durability) as again:
        assert sorted(labels(again)) == sorted(acknowledged)  # acknowledged: kept; refused: no trace
        assert again.version == len(acknowledged) == max(acknowledged.values(), default=0)


def wal_bytes(path: Path) -> int:
    wal = path.with_name(path.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


def test_a_thread_folds_the_wal_back_so_the_writer_never_pauses_for_it(tmp_path: Path, durability: Durability) -> None:
    # The writer's own automatic checkpoint is off (it ran inside a COMMIT, on the event loop):
    # without the thread, every page of every commit would stay in the WAL.
    path = tmp_path / "db.sqlite3"
    with opened(path, durability) as engine:
        for burst in range(10):
            for i in range(250):
                engine.write_sync(add(f"entry {burst}-{i:03d} " + "x" * 400))
            time.sleep(0.1)  # a pause between bursts, as any real load has
        deadline = time.monotonic() + 10
        while engine.checkpoints[0] < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        thread, writer = engine.checkpoints
        assert thread >= 10 and writer == 0
        assert path.stat().st_size > 2500 * 400  # the rows reached the file itself
        assert wal_bytes(path) < 16 * 2**20  # 2,500 commits would leave about 45 MiB
        assert len(labels(engine)) == 2500


def test_under_writes_without_a_pause_the_wal_stays_bounded(tmp_path: Path) -> None:
    # The WAL restarts only when a writer finds it wholly copied back, which a thread racing a
    # writer that never pauses may not see: past the limit the writer checkpoints itself.
    path = tmp_path / "db.sqlite3"
    with opened(path, Durability.NORMAL) as engine:
        for i in range(6000):
            engine.write_sync(add(f"entry {i:04d} " + "x" * 400))
        assert engine.checkpoints[0] >= 1
        assert wal_bytes(path) < 40 * 2**20  # about 4,000 frames of 4 KiB, not 6,000 commits' worth
        assert len(labels(engine)) == 6000


def test_a_closed_engine_refuses_reads_and_writes(tmp_path: Path) -> None:
    with opened(tmp_path / "db.sqlite3") as engine:
        engine.close()
        engine.close()  # twice is harmless
        with pytest.raises(ServiceUnavailable):
            engine.write_sync(add("late"))
        with pytest.raises(ServiceUnavailable):
            engine.read_sync(counts)


def test_every_acknowledged_write_and_the_version_survive_a_reopen(tmp_path: Path, durability: Durability) -> None:
    path = tmp_path / "db.sqlite3"
    with opened(path, durability) as engine:

        async def main() -> None:
            await asyncio.gather(*(engine.write(add(f"async {i}")) for i in range(30)))

        asyncio.run(main())
        threads = [threading.Thread(target=engine.write_sync, args=(add(f"thread {i}"),)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pytest.raises(Boom):
            engine.write_sync(add_then_fail("lost"))
    assert not path.with_name("db.sqlite3-wal").exists() or path.with_name("db.sqlite3-wal").stat().st_size == 0
    with opened(path, durability) as again:
        assert again.version == 40
        assert sorted(labels(again)) == sorted([f"async {i}" for i in range(30)] + [f"thread {i}" for i in range(10)])
        assert again.write_sync(add("after")).version == 41
    with opened(path, durability) as third:
        assert third.version == 41 and third.read_sync(counts).value == (41, 41)


# -- over HTTP ----------------------------------------------------------------------

http_app = App("failing")


@http_app.table
class Note(Table, table="notes", policy=owner_policy("owner_id")):
    text: str
    owner_id: str | None = None


@http_app.mutation()
def add_note(ctx: Ctx, text: str) -> dict[str, Any]:
    return ctx.db.insert("notes", {"text": text})


@http_app.mutation()
def add_notes_then_fail(ctx: Ctx, text: str) -> None:
    ctx.db.insert("notes", {"text": text})
    ctx.db.insert("notes", {"text": text + " again"})
    raise ValueError("secret detail of the bug")


@http_app.query()
def count_notes(ctx: Ctx) -> int:
    return ctx.db.count("notes")


def test_a_mutation_that_raises_over_http_leaves_no_trace(tmp_path: Path) -> None:
    with serve(http_app, tmp_path / "data") as server:
        assert server.service is not None
        alice = server.client(server.token("alice"))
        alice.call("add_note", text="kept")
        version = alice.last_version
        response = alice.post("add_notes_then_fail", {"text": "lost"})
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["code"] == "InternalError" and set(response.json()) == {"error"}
        for leak in ("secret detail", "ValueError", "Traceback", "INSERT", "sqlite"):
            assert leak not in response.text
        assert alice.call("count_notes") == 1
        assert alice.last_version == version == server.service.engine.version
        assert alice.call("add_note", text="next")["text"] == "next" and alice.last_version == version + 1


def test_commits_of_another_process_are_caught_up_and_announced(tmp_path: Path) -> None:
    """Two engines on one file stand for the server and `nanotypedb worker`: versions stay gapless
    and unique, and each hears of the other's commits as `external` ones."""
    path = tmp_path / "shared.sqlite3"
    with opened(path) as server, opened(path) as worker:
        heard: list[Commit] = []
        server.on_commit(heard.extend)
        assert server.write_sync(add("a")).version == 1
        assert worker.write_sync(add("b")).version == 2  # read from the file, not worker's memory
        assert server.write_sync(add("c")).version == 3
        assert [(c.version, bool(c.info.get("external"))) for c in heard] == [(1, False), (2, True), (3, False)]
        worker.write_sync(add("d"))
        assert server.check_external()  # found while the server writes nothing
        assert not server.check_external()  # and only once
        assert heard[-1].version == 4 and heard[-1].info == {"external": True}
        assert server.version == 4


def test_bookkeeping_writes_take_no_version(engine: SqliteEngine) -> None:
    engine.write_sync(add("a"))
    result = engine.write_sync(lambda tx: tx.conn.execute("INSERT INTO tallies (label) VALUES ('x')"), versioned=False)
    assert result.version == 1
    assert engine.write_sync(add("b")).version == 2
