"""The `_vectors` table in an in-memory SQLite: float32 little-endian bytes in, the same numbers out."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

import numpy as np
import pytest

from nanotypedb.errors import ValidationFailed
from nanotypedb.vectors import store


@pytest.fixture
def conn() -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    for statement in store.ddl():
        conn.execute(statement)
    yield conn
    conn.close()


def test_ddl_is_idempotent(conn: sqlite3.Connection) -> None:
    for statement in store.ddl():
        conn.execute(statement)


def test_put_then_load_all_gives_the_same_float32_numbers_in_id_order(conn: sqlite3.Connection) -> None:
    vectors = np.random.default_rng(0).standard_normal((5, 8), dtype=np.float32)
    for row_id in (9, 2, 5, 1, 7):
        store.put(conn, "docs", row_id, vectors[row_id % 5], f"h{row_id}")
    store.put(conn, "other", 1, np.ones(3, dtype=np.float32), "x")
    ids, matrix = store.load_all(conn, "docs")
    assert ids.dtype == np.int64 and matrix.dtype == np.float32
    assert ids.tolist() == [1, 2, 5, 7, 9]
    np.testing.assert_array_equal(matrix, vectors[[1, 2, 0, 2, 4]])
    matrix[0, 0] = 42  # the arrays are the caller's own, not views of SQLite's bytes


def test_the_bytes_are_float32_little_endian(conn: sqlite3.Connection) -> None:
    store.put(conn, "docs", 1, [1.0, -2.5], "h")
    (blob,) = conn.execute("SELECT vector FROM _vectors").fetchone()
    assert blob == np.array([1.0, -2.5], dtype="<f4").tobytes() == b"\x00\x00\x80?\x00\x00 \xc0"


def test_put_replaces_vector_and_hash_and_delete_removes(conn: sqlite3.Connection) -> None:
    store.put(conn, "docs", 1, [1.0, 0.0], "old")
    store.put(conn, "docs", 1, [0.0, 1.0, 2.0], "new")
    assert store.get_hash(conn, "docs", 1) == "new"
    np.testing.assert_array_equal(store.get(conn, "docs", 1), [0.0, 1.0, 2.0])
    store.delete(conn, "docs", 1)
    assert store.get_hash(conn, "docs", 1) is None and store.get(conn, "docs", 1) is None
    store.delete(conn, "docs", 1)  # deleting what is gone is fine


def test_an_empty_table_loads_as_empty_arrays(conn: sqlite3.Connection) -> None:
    ids, matrix = store.load_all(conn, "docs")
    assert ids.shape == (0,) and matrix.shape[0] == 0


def test_vectors_of_two_sizes_in_one_table_are_reported(conn: sqlite3.Connection) -> None:
    store.put(conn, "docs", 1, [1.0, 0.0], "a")
    store.put(conn, "docs", 2, [1.0, 0.0, 0.0], "b")
    with pytest.raises(ValidationFailed, match="several sizes"):
        store.load_all(conn, "docs")


@pytest.mark.parametrize("bad", [[], [[1.0, 2.0]], [1.0, float("nan")], [float("inf")]])
def test_bad_vectors_are_refused_before_sql(conn: sqlite3.Connection, bad: object) -> None:
    with pytest.raises(ValidationFailed):
        store.put(conn, "docs", 1, bad, "h")
    assert store.get_hash(conn, "docs", 1) is None


def test_with_the_current_size_stale_vectors_of_another_size_are_skipped(conn: sqlite3.Connection) -> None:
    store.put(conn, "docs", 1, [1.0, 0.0], "old model")
    store.put(conn, "docs", 2, [1.0, 0.0, 0.0], "new model")
    ids, matrix = store.load_all(conn, "docs", dims=3)
    assert ids.tolist() == [2] and matrix.shape == (1, 3)
    assert store.load_all(conn, "docs", dims=5)[1].shape == (0, 5)


def test_delete_table_forgets_only_that_table(conn: sqlite3.Connection) -> None:
    store.put(conn, "docs", 1, [1.0], "a")
    store.put(conn, "other", 1, [1.0], "b")
    store.delete_table(conn, "docs")
    assert store.get_hash(conn, "docs", 1) is None and store.get_hash(conn, "other", 1) == "b"


def test_changed_since_gives_the_latest_vector_of_each_row_put_after_a_seq(conn: sqlite3.Connection) -> None:
    store.put(conn, "docs", 1, [1.0, 0.0], "a")
    seen = store.last_seq(conn)
    store.put(conn, "docs", 2, [0.0, 1.0], "b")
    store.put(conn, "docs", 1, [2.0, 0.0], "a2")  # a replacement counts as new
    store.put(conn, "docs", 1, [3.0, 0.0], "a3")
    store.put(conn, "other", 5, [1.0, 1.0], "c")
    ids, matrix = store.changed_since(conn, "docs", seen)
    assert ids.tolist() == [2, 1]
    np.testing.assert_array_equal(matrix, [[0.0, 1.0], [3.0, 0.0]])
    assert store.changed_since(conn, "docs", store.last_seq(conn))[0].size == 0


def test_seq_is_never_reused_after_a_delete(conn: sqlite3.Connection) -> None:
    store.put(conn, "docs", 1, [1.0], "a")
    seen = store.last_seq(conn)
    store.delete(conn, "docs", 1)
    store.put(conn, "docs", 2, [1.0], "b")
    assert store.changed_since(conn, "docs", seen)[0].tolist() == [2]
