"""The `_vectors` table: one float32 vector per (table, row), stored as little-endian bytes.

Every function takes a connection inside a transaction the caller owns, so a vector is
written or removed atomically with the row it belongs to (or with the job that made it).
"""

from __future__ import annotations

import sqlite3
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import ValidationFailed

# Little-endian whatever the machine: the file must read the same everywhere.
DTYPE = np.dtype("<f4")
MAX_DIMS = 16_384

IdArray = npt.NDArray[np.int64]
Matrix = npt.NDArray[np.float32]


def ddl() -> list[str]:
    """The statements that create `_vectors`; idempotent, applied at open by the engine."""
    # `seq` grows with every put and is never reused (AUTOINCREMENT), so a process can ask for
    # the vectors another process (`nanotypedb worker`) wrote since it last looked: changed_since.
    # The rows live in the rowid b-tree, not a WITHOUT ROWID one: rows of 1.5 KB and more
    # (384 float32) are what SQLite's docs advise against clustering in a primary-key b-tree.
    return [
        "CREATE TABLE IF NOT EXISTS _vectors ("
        " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        " tbl TEXT NOT NULL,"
        " row_id INTEGER NOT NULL,"
        " dims INTEGER NOT NULL,"
        " vector BLOB NOT NULL,"
        " content_hash TEXT NOT NULL,"
        " UNIQUE (tbl, row_id))"
    ]


def as_vector(vector: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """A 1-D, finite float32 array, or ValidationFailed saying what came instead."""
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or not 0 < array.shape[0] <= MAX_DIMS:
        raise ValidationFailed(f"A vector must be 1-D with 1 to {MAX_DIMS} numbers, got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise ValidationFailed("A vector must hold finite numbers, not NaN or infinity.")
    return array


def put(conn: sqlite3.Connection, table: str, row_id: int, vector: npt.ArrayLike, content_hash: str) -> None:
    """Store (or replace) the vector of one row, with the hash of the content it was computed from."""
    array = as_vector(vector)
    # REPLACE deletes the row's previous vector and inserts anew, so the vector gets a new `seq`.
    conn.execute(
        "INSERT OR REPLACE INTO _vectors (tbl, row_id, dims, vector, content_hash) VALUES (?, ?, ?, ?, ?)",
        (table, row_id, array.shape[0], array.astype(DTYPE, copy=False).tobytes(), content_hash),
    )


def delete(conn: sqlite3.Connection, table: str, row_id: int) -> None:
    conn.execute("DELETE FROM _vectors WHERE tbl = ? AND row_id = ?", (table, row_id))


def get_hash(conn: sqlite3.Connection, table: str, row_id: int) -> str | None:
    """The content hash of the stored vector (None: no vector), for a job to tell it is stale."""
    found = conn.execute("SELECT content_hash FROM _vectors WHERE tbl = ? AND row_id = ?", (table, row_id)).fetchone()
    return None if found is None else str(found[0])


def get(conn: sqlite3.Connection, table: str, row_id: int) -> npt.NDArray[np.float32] | None:
    """The stored vector of one row, as written (not normalised)."""
    found = conn.execute("SELECT vector FROM _vectors WHERE tbl = ? AND row_id = ?", (table, row_id)).fetchone()
    return None if found is None else np.frombuffer(found[0], dtype=DTYPE).astype(np.float32)


def delete_table(conn: sqlite3.Connection, table: str) -> None:
    """Forget every vector of `table` (before re-embedding it with another model)."""
    conn.execute("DELETE FROM _vectors WHERE tbl = ?", (table,))


def last_seq(conn: sqlite3.Connection) -> int:
    """The `seq` of the latest put: what `changed_since` starts from after a load in the same snapshot."""
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM _vectors").fetchone()[0])


def load_all(conn: sqlite3.Connection, table: str, dims: int | None = None) -> tuple[IdArray, Matrix]:
    """Every vector of `table`: ids in row-id order and one (n, dims) float32 matrix.

    With `dims`, vectors of another size are left out (stale ones from a previous model, which
    their re-embedding will replace); without it, a table holding two sizes is an error.
    """
    sql = "SELECT row_id, dims, vector FROM _vectors WHERE tbl = ?"
    params: tuple[str | int, ...] = (table,) if dims is None else (table, dims)
    sql += " ORDER BY row_id" if dims is None else " AND dims = ? ORDER BY row_id"
    return _arrays(table, conn.execute(sql, params).fetchall(), dims)


def changed_since(conn: sqlite3.Connection, table: str, seq: int, dims: int | None = None) -> tuple[IdArray, Matrix]:
    """The vectors of `table` put after `seq` (each row's latest only), like `load_all`.

    Deletions do not show here: a deleted vector simply stops being there.
    """
    sql = "SELECT row_id, dims, vector FROM _vectors WHERE seq > ? AND tbl = ?"
    params: tuple[str | int, ...] = (seq, table) if dims is None else (seq, table, dims)
    sql += " ORDER BY seq" if dims is None else " AND dims = ? ORDER BY seq"
    return _arrays(table, conn.execute(sql, params).fetchall(), dims)


def _arrays(table: str, rows: list[Any], dims: int | None) -> tuple[IdArray, Matrix]:
    if not rows:
        return np.empty(0, dtype=np.int64), np.empty((0, dims or 0), dtype=np.float32)
    sizes = {row[1] for row in rows}
    if len(sizes) > 1:
        raise ValidationFailed(
            f"Table {table!r} holds vectors of several sizes {sorted(sizes)}: load it with the size of the current"
            " model's vectors, or delete its vectors and re-embed it."
        )
    ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
    # One join into a bytearray, which numpy then uses as is (writable, so no copy): a Python loop
    # of 100,000 small arrays would take ten times longer, and a copy of 150 MB half a second.
    flat = np.frombuffer(bytearray().join(row[2] for row in rows), dtype=DTYPE)
    return ids, flat.reshape(len(rows), sizes.pop()).astype(np.float32, copy=False)  # copies on big-endian only
