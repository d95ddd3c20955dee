"""VectorIndex: every table's vectors in memory, L2-normalised, searched exactly by cosine similarity.

One matrix-vector product scores every row (float32 throughout: about 8 ms at 100,000 x 384),
`np.argpartition` picks the best. Row-level security plugs in as `accept`, a filter over
batches of candidate ids taken best first, so a caller gets their own k best rows.

Not thread-safe: the server reads and writes it from the event loop thread only (commit
listeners write, functions search), so no call ever sees another half done. Searching from
another thread would need a lock around every call.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import numpy.typing as npt

from ..errors import ValidationFailed
from . import store
from .store import IdArray
from .table import TableVectors, Vector

Accept = Callable[[IdArray], npt.ArrayLike]

# Candidates handed to `accept` at once: k x 4 first, then 4 times more each round, at most
# this many (the RLS bridge binds each id as a SQL parameter; SQLite >= 3.32 allows 32,766).
FIRST_BATCH_FACTOR = 4
GROWTH = 4
MAX_BATCH = 8192
POOL_SIZE = MAX_BATCH
_EMPTY_SLOTS: npt.NDArray[np.intp] = np.empty(0, dtype=np.intp)
_EMPTY_SCORES: npt.NDArray[np.float32] = np.empty(0, dtype=np.float32)


def normalise(vector: npt.ArrayLike) -> Vector:
    """A finite float32 vector scaled to length 1 (a zero vector stays zero: it matches nothing)."""
    array = store.as_vector(vector)
    # np.linalg.norm of float32 is float32, so the division does not promote to float64.
    norm = np.linalg.norm(array)
    return array / norm if norm > 0 else array.copy()


class VectorIndex:
    """The in-memory vectors of every embedded table, loaded from `_vectors` and kept in step by the caller."""

    def __init__(self) -> None:
        self._tables: dict[str, TableVectors] = {}
        self._seen: dict[str, int] = {}  # per table, the `seq` of _vectors up to which it is loaded

    def load(self, conn: sqlite3.Connection, tables: Iterable[str], dims: Mapping[str, int] | None = None) -> None:
        """Replace the vectors of `tables` by those stored in SQLite (at start-up).

        `dims` gives the size of the current model's vectors per table, when known: stored
        vectors of another size (a previous model's) are then skipped rather than refused.
        """
        seq = store.last_seq(conn)  # first: a put after it is then seen by the next refresh
        for table in tables:
            ids, matrix = store.load_all(conn, table, (dims or {}).get(table))
            self._tables[table] = TableVectors.from_arrays(ids, matrix) if len(ids) else TableVectors(0)
            self._seen[table] = seq

    def refresh(
        self, conn: sqlite3.Connection, tables: Iterable[str] | None = None, dims: Mapping[str, int] | None = None
    ) -> int:
        """Take in the vectors put since the last load or refresh, by this process or another
        (`nanotypedb worker`); returns how many. Deletions are not seen: `remove` them."""
        seq = store.last_seq(conn)
        applied = 0
        for table in list(self._seen) if tables is None else tables:
            ids, matrix = store.changed_since(conn, table, self._seen.get(table, 0), (dims or {}).get(table))
            for row_id, vector in zip(ids.tolist(), matrix, strict=True):
                self.upsert(table, row_id, vector)
            self._seen[table] = seq
            applied += len(ids)
        return applied

    def drop(self, table: str) -> None:
        """Forget every vector of `table` (with `store.delete_table`, before re-embedding it)."""
        self._tables.pop(table, None)
        self._seen.pop(table, None)

    def count(self, table: str) -> int:
        found = self._tables.get(table)
        return 0 if found is None else found.size

    def dims(self, table: str) -> int | None:
        """The size of the table's vectors (None: it holds none yet)."""
        found = self._tables.get(table)
        return found.dims if found is not None and found.size else None

    def upsert(self, table: str, row_id: int, vector: npt.ArrayLike) -> None:
        unit = normalise(vector)
        found = self._tables.get(table)
        if found is None or (found.size == 0 and found.dims != len(unit)):
            # An empty table takes the size of its first vector (a new model may change it).
            found = self._tables[table] = TableVectors(len(unit))
        elif found.dims != len(unit):
            raise ValidationFailed(f"Table {table!r} holds vectors of {found.dims} numbers, not {len(unit)}.")
        found.upsert(row_id, unit)

    def remove(self, table: str, row_id: int) -> bool:
        """Forget one row's vector; False if it had none."""
        found = self._tables.get(table)
        return found is not None and found.remove(row_id)

    def vector(self, table: str, row_id: int) -> Vector | None:
        """A copy of the row's normalised vector (None: no vector)."""
        found = self._tables.get(table)
        slot = None if found is None else found.slots.get(row_id)
        return None if found is None or slot is None else found.row(slot).copy()

    def score(self, table: str, row_id: int, query: npt.ArrayLike) -> float:
        """Cosine similarity of one row with `query`; KeyError if the row has no vector."""
        row = self.vector(table, row_id)
        if row is None:
            raise KeyError(f"no vector for row {row_id} of {table!r}")
        return float(row @ self._unit_query(table, query))

    def match(self, table: str, query: npt.ArrayLike, threshold: float) -> list[tuple[int, float]]:
        """Every row whose cosine similarity with `query` is at least `threshold`, best first.

        Not filtered: pass the ids through the caller's `accept` before showing any row."""
        found = self._tables.get(table)
        if found is None or found.size == 0:
            return []
        scores = found.scores(self._unit_query(table, query))
        slots = np.flatnonzero(scores >= threshold)
        slots = slots[np.argsort(-scores[slots], kind="stable")]
        return list(zip(found.ids[slots].tolist(), scores[slots].tolist(), strict=True))

    def search(self, table: str, query: npt.ArrayLike, k: int, accept: Accept | None = None) -> list[tuple[int, float]]:
        """The k rows most similar to `query` (cosine), best first, as (row id, score).

        With `accept`, only rows it accepts: it gets candidate ids best first, in batches, and
        returns those the caller may see; batches grow until k are accepted or none are left.
        """
        if k < 1:
            raise ValidationFailed(f"k must be at least 1, got {k}.")
        found = self._tables.get(table)
        if found is None or found.size == 0:
            return []
        scores = found.scores(self._unit_query(table, query))
        if accept is None:
            slots = _top(scores, k)
            return list(zip(found.ids[slots].tolist(), scores[slots].tolist(), strict=True))
        # A copy of the ids: `accept` runs the caller's code, which must not see (or cause) a torn index.
        return _walk(found.ids[: found.size].copy(), scores, k, accept)

    def _unit_query(self, table: str, query: npt.ArrayLike) -> Vector:
        unit = normalise(query)
        dims = self.dims(table)
        if dims is not None and dims != len(unit):
            raise ValidationFailed(f"Table {table!r} holds vectors of {dims} numbers; the query has {len(unit)}.")
        return unit


def _top(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    """The slots of the k best scores, best first: O(n) to find them, O(k log k) to order them."""
    best = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    ordered: npt.NDArray[np.intp] = best[np.argsort(-scores[best], kind="stable")]
    return ordered


def _walk(ids: IdArray, scores: npt.NDArray[np.float32], k: int, accept: Accept) -> list[tuple[int, float]]:
    """Hand candidates to `accept` best first, in growing batches, until k are accepted.

    Batches come from a pool of ranked candidates: the first pool is the first batch (the
    common case, where it is enough); later ones hold POOL_SIZE, so a caller who sees few
    rows costs two or three passes over `scores`, not one per batch. Each pool is taken out
    of `scores` (the product `search` just made, overwritten here) by sinking it to -inf,
    below any cosine, so the next pool is the best of the rest.
    """
    found: list[tuple[int, float]] = []
    pool, pool_scores = _EMPTY_SLOTS, _EMPTY_SCORES
    left = len(ids)  # candidates still in `scores`
    batch = min(k * FIRST_BATCH_FACTOR, MAX_BATCH)
    while len(found) < k and (len(pool) or left):
        if not len(pool):
            size = min(batch if left == len(ids) else max(batch, POOL_SIZE), left)
            pool = _top(scores, size)
            pool_scores = scores[pool]
            scores[pool] = -np.inf
            left -= size
        candidates, taken = ids[pool[:batch]], pool_scores[:batch]
        pool, pool_scores = pool[batch:], pool_scores[batch:]
        # Membership is checked on our side: an id `accept` returns that it was not given is ignored.
        ok = np.isin(candidates, np.asarray(accept(candidates), dtype=np.int64))
        found.extend(zip(candidates[ok].tolist(), taken[ok].tolist(), strict=True))
        batch = min(batch * GROWTH, MAX_BATCH)
    return found[:k]
