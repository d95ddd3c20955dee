"""Vector search for bench/jobs.py: exact cosine top k through VectorIndex, plain, filtered and under RLS.

Vectors are random float32 (normal, 384 dims): an exact search costs the same whatever
their meaning, one matrix-vector product over every row. The rows and vectors live in a
real SQLite file through SqliteEngine, so the load figure and the RLS searches (each a
`ctx.db` read in its own snapshot) run the code the server runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from _jobs_report import Line, timed
from nanotypedb.auth.policy import owner_policy
from nanotypedb.auth.principal import user
from nanotypedb.functions.db import Db
from nanotypedb.storage.engine import Durability, SqliteEngine
from nanotypedb.storage.schema import Table
from nanotypedb.storage.transaction import Transaction
from nanotypedb.vectors import Accept, VectorIndex, accept_visible, store

SEARCH = "vector search"
Vectors = npt.NDArray[np.float32]


class Half(Table, table="halves", policy=owner_policy()):
    """Two owners, alternating: each user sees half the rows."""

    text: str
    owner_id: str | None = None


class Hundredth(Table, table="hundredths", policy=owner_policy()):
    """A hundred owners, in turn: each user sees 1 % of the rows."""

    text: str
    owner_id: str | None = None


OWNERS = {"halves": 2, "hundredths": 100}


@dataclass(frozen=True)
class Settings:
    sizes: tuple[int, ...]
    dims: int
    k: int
    queries: int  # per search scenario at the largest size; smaller sizes run more
    warmup: int


def random_vectors(n: int, dims: int, seed: int) -> Vectors:
    return np.random.default_rng(seed).standard_normal((n, dims), dtype=np.float32)


def latencies(runs: dict[str, Callable[[Vectors], Any]], queries: Vectors, warmup: int) -> dict[str, list[float]]:
    """Each query through every run in turn, the order rotating: a burst of load from a neighbour
    then hits every scenario alike, so figures from one run compare with each other."""
    spent: dict[str, list[float]] = {label: [] for label in runs}
    order = list(runs.items())
    for i, query in enumerate(queries):
        for label, run in order[i % len(order) :] + order[: i % len(order)]:
            start = time.perf_counter()
            run(query)
            if i >= warmup:
                spent[label].append(time.perf_counter() - start)
    return spent


def even_ids(ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """An `accept` with no SQL that rejects half the ids: the cost of the walk itself."""
    result: npt.NDArray[np.int64] = ids[ids % 2 == 0]
    return result


PLAIN: dict[str, Accept | None] = {"no filter": None, "accept rejects half (numpy)": even_ids}


def searcher(index: VectorIndex, table: str, k: int, accept: Accept | None) -> Callable[[Vectors], Any]:
    return lambda query: index.search(table, query, k, accept)


def rls_searcher(engine: SqliteEngine, index: VectorIndex, table: str, k: int) -> Callable[[Vectors], Any]:
    """A search as user u0 inside a read snapshot, as a query function would run it through `ctx.db`."""

    def search(query: Vectors) -> Any:
        return engine.read_sync(lambda tx: index.search(table, query, k, accept_visible(Db(tx, user("u0")), table)))

    return search


@contextmanager
def opened(path: Path) -> Iterator[SqliteEngine]:
    engine = SqliteEngine(path, durability=Durability.NORMAL)
    engine.open([Half.__schema__, Hundredth.__schema__])
    engine.write_sync(lambda tx: [tx.conn.execute(statement) for statement in store.ddl()])
    try:
        yield engine
    finally:
        engine.close()


def fill(engine: SqliteEngine, table: str, vectors: Vectors) -> float:
    """Insert one row and its vector per line of `vectors`, in one transaction; the seconds it took."""
    owners = OWNERS[table]

    def write(tx: Transaction) -> None:
        schema = tx.table(table)
        for i, vector in enumerate(vectors):
            row = tx.insert(schema, {"text": f"row {i}", "owner_id": f"u{i % owners}"})
            store.put(tx.conn, table, row["id"], vector, f"hash {i}")

    start = time.perf_counter()
    engine.write_sync(write)
    return time.perf_counter() - start


def in_memory(sizes: tuple[int, ...], vectors: Vectors, settings: Settings) -> list[Line]:
    """Upserts one at a time; below the largest size, searches with no filter and with a filter that
    rejects half (the largest size is searched by `in_sqlite`, with the RLS cases beside these)."""
    lines = []
    largest = max(sizes)
    for n in sizes:
        index = VectorIndex()
        start = time.perf_counter()
        for row_id, vector in enumerate(vectors[:n], start=1):
            index.upsert("docs", row_id, vector)
        upserts = time.perf_counter() - start
        lines.append(Line("upsert", f"{n:,} x {settings.dims}, one at a time", n, per_s=n / upserts, seconds=upserts))
        if n < largest:
            count = settings.queries * max(1, largest // n // 2)  # more queries where each is cheap
            queries = random_vectors(count + settings.warmup, settings.dims, seed=n)
            runs = {label: searcher(index, "docs", settings.k, accept) for label, accept in PLAIN.items()}
            for label, spent in latencies(runs, queries, settings.warmup).items():
                lines.append(timed(SEARCH, f"{n:,} x {settings.dims}, k={settings.k}, {label}", spent))
    return lines


def in_sqlite(workdir: Path, vectors: Vectors, settings: Settings) -> list[Line]:
    """Store and load the largest size through SQLite, then search it: no filter, a filter that rejects
    half, and RLS as a user who sees half, then 1 %, of the rows, interleaved query by query."""
    n, dims, k = len(vectors), settings.dims, settings.k
    lines = []
    with opened(workdir / "vectors.sqlite3") as engine:
        seconds = fill(engine, "halves", vectors)
        lines.append(
            Line("store rows + vectors", f"{n:,} x {dims}, one transaction", n, per_s=n / seconds, seconds=seconds)
        )
        fill(engine, "hundredths", vectors)
        index = VectorIndex()
        start = time.perf_counter()
        engine.read_sync(lambda tx: index.load(tx.conn, ["halves"]))
        seconds = time.perf_counter() - start
        note = "file in page cache"
        lines.append(Line("load from SQLite", f"{n:,} x {dims}", n, per_s=n / seconds, seconds=seconds, note=note))
        engine.read_sync(lambda tx: index.load(tx.conn, ["hundredths"]))
        runs = {label: searcher(index, "halves", k, accept) for label, accept in PLAIN.items()}
        for table, share in (("halves", "half"), ("hundredths", "1 %")):
            runs[f"RLS via ctx.db, user sees {share}"] = rls_searcher(engine, index, table, k)
        queries = random_vectors(settings.queries + settings.warmup, dims, seed=7)
        for label, spent in latencies(runs, queries, settings.warmup).items():
            note = "one read snapshot per search" if label.startswith("RLS") else ""
            lines.append(timed(SEARCH, f"{n:,} x {dims}, k={k}, {label}", spent, note=note))
    return lines


def exactness(vectors: Vectors, settings: Settings, checks: int = 20) -> Line:
    """The index's top k against a full sort of float64 cosines, on a few queries: exact search finds them all."""
    index = VectorIndex()
    n = min(len(vectors), 10_000)
    for row_id, vector in enumerate(vectors[:n], start=1):
        index.upsert("docs", row_id, vector)
    unit = vectors[:n].astype(np.float64)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    hits = 0
    for query in random_vectors(checks, settings.dims, seed=3):
        expected = set((np.argsort(-(unit @ query.astype(np.float64)))[: settings.k] + 1).tolist())
        hits += len(expected & {i for i, _ in index.search("docs", query, settings.k)})
    recall = hits / (checks * settings.k)
    return Line(
        "recall@k", f"{n:,} x {settings.dims}, k={settings.k}, {checks} queries", checks, note=f"recall {recall:.3f}"
    )


def measure(workdir: Path, settings: Settings) -> list[Line]:
    vectors = random_vectors(max(settings.sizes), settings.dims, seed=1)
    return [
        *in_memory(settings.sizes, vectors, settings),
        *in_sqlite(workdir, vectors, settings),
        exactness(vectors, settings),
    ]
