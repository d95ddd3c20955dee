"""Vectors in a real SQLite file under the engine: they survive a restart, and search under RLS shows only own rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nanotypedb import App, PolicyDenied, Table, owner_policy, predicate
from nanotypedb.auth.policy import Policy
from nanotypedb.auth.principal import Principal, admin, user
from nanotypedb.functions.db import Db
from nanotypedb.storage.engine import SqliteEngine
from nanotypedb.storage.transaction import Transaction
from nanotypedb.vectors import VectorIndex, accept_visible, store

DIMS = 16
app = App("vectors")


@app.table
class Note(Table, table="notes", policy=owner_policy("owner_id")):
    text: str
    owner_id: str | None = None


@app.table
class Secret(Table, table="secrets"):  # no policy: admins only
    text: str


@app.table
class Even(Table, table="evens", policy=Policy(read=predicate(lambda _, row: row["id"] % 2 == 0))):
    text: str


def open_engine(path: Path) -> SqliteEngine:
    engine = SqliteEngine(path)
    engine.open(app.tables.values())
    engine.write_sync(lambda tx: [tx.conn.execute(statement) for statement in store.ddl()])
    return engine


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[SqliteEngine]:
    engine = open_engine(tmp_path / "db.sqlite3")
    yield engine
    engine.close()


def add_rows(engine: SqliteEngine, table: str, owners: list[str], seed: int = 0) -> dict[int, str]:
    """One row per owner in `owners`, each with a random vector stored in the same transaction."""
    vectors = np.random.default_rng(seed).standard_normal((len(owners), DIMS), dtype=np.float32)

    def write(tx: Transaction) -> dict[int, str]:
        made = {}
        for owner, vector in zip(owners, vectors, strict=True):
            row = tx.insert(
                tx.table(table), {"text": f"note of {owner}", "owner_id": owner} if owner else {"text": "x"}
            )
            store.put(tx.conn, table, row["id"], vector, f"hash {row['id']}")
            made[row["id"]] = owner
        return made

    return engine.write_sync(write).value


def search_as(engine: SqliteEngine, index: VectorIndex, principal: Principal, table: str, k: int) -> Any:
    query = np.random.default_rng(99).standard_normal(DIMS, dtype=np.float32)

    def read(tx: Transaction) -> list[tuple[int, float]]:
        return index.search(table, query, k, accept_visible(Db(tx, principal), table))

    return engine.read_sync(read).value


def loaded(engine: SqliteEngine, *tables: str) -> VectorIndex:
    index = VectorIndex()
    engine.read_sync(lambda tx: index.load(tx.conn, tables))
    return index


def test_a_search_never_returns_another_users_rows(engine: SqliteEngine) -> None:
    # Bob owns 95 % of the rows, so alice's few are mostly far down any ranking.
    owners = add_rows(engine, "notes", ["bob"] * 19 * 10 + ["alice"] * 10 + ["carol"] * 3)
    index = loaded(engine, "notes")
    for who, k in (("alice", 5), ("alice", 50), ("carol", 10), ("bob", 20)):
        found = search_as(engine, index, user(who), "notes", k)
        assert {owners[i] for i, _ in found} == {who}
        assert len(found) == min(k, list(owners.values()).count(who))
        scores = [s for _, s in found]
        assert scores == sorted(scores, reverse=True)
    assert search_as(engine, index, user("dave"), "notes", 10) == []


def test_an_admin_sees_every_row_and_the_filter_keeps_the_rows_it_read(engine: SqliteEngine) -> None:
    add_rows(engine, "notes", ["alice", "bob"] * 5)
    index = loaded(engine, "notes")
    query = np.ones(DIMS, dtype=np.float32)

    def read(tx: Transaction) -> tuple[list[tuple[int, float]], list[Any]]:
        accept = accept_visible(Db(tx, admin()), "notes")
        found = index.search("notes", query, 10, accept)
        return found, accept.rows_for([i for i, _ in found])

    found, rows = engine.read_sync(read).value
    assert len(found) == 10 and [r["id"] for r in rows] == [i for i, _ in found]


def test_a_predicate_rule_applies_too(engine: SqliteEngine) -> None:
    add_rows(engine, "evens", [""] * 40)
    index = loaded(engine, "evens")
    found = search_as(engine, index, user("alice"), "evens", 40)
    assert len(found) == 20 and all(i % 2 == 0 for i, _ in found)


def test_a_table_without_a_policy_is_refused_to_users(engine: SqliteEngine) -> None:
    add_rows(engine, "secrets", [""] * 3)
    index = loaded(engine, "secrets")
    with pytest.raises(PolicyDenied):
        search_as(engine, index, user("alice"), "secrets", 3)
    assert len(search_as(engine, index, admin(), "secrets", 3)) == 3


def test_a_row_deleted_in_sql_but_still_indexed_is_not_returned(engine: SqliteEngine) -> None:
    owners = add_rows(engine, "notes", ["alice"] * 5)
    index = loaded(engine, "notes")
    gone = next(iter(owners))
    engine.write_sync(lambda tx: tx.delete(tx.table("notes"), gone))
    found = search_as(engine, index, admin(), "notes", 5)
    assert gone not in [i for i, _ in found] and len(found) == 4


def test_vectors_survive_a_restart_and_a_rolled_back_write_leaves_none(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    engine = open_engine(path)
    owners = add_rows(engine, "notes", ["alice"] * 30)
    before = search_as(engine, loaded(engine, "notes"), user("alice"), "notes", 5)

    def fails(tx: Transaction) -> None:
        store.put(tx.conn, "notes", 10_000, np.ones(DIMS, dtype=np.float32), "lost")
        raise RuntimeError("the mutation's own bug")

    with pytest.raises(RuntimeError):
        engine.write_sync(fails)
    engine.close()

    again = open_engine(path)
    try:
        index = loaded(again, "notes")
        assert index.count("notes") == len(owners)
        assert search_as(again, index, user("alice"), "notes", 5) == before
        assert again.read_sync(lambda tx: store.get_hash(tx.conn, "notes", 10_000)).value is None
    finally:
        again.close()


def test_loading_with_the_models_size_skips_a_previous_models_vectors(engine: SqliteEngine) -> None:
    owners = add_rows(engine, "notes", ["alice"] * 4)
    stale = next(iter(owners))
    engine.write_sync(lambda tx: store.put(tx.conn, "notes", stale, np.ones(DIMS * 2, dtype=np.float32), "old"))
    index = VectorIndex()
    engine.read_sync(lambda tx: index.load(tx.conn, ["notes"], {"notes": DIMS}))
    assert index.count("notes") == 3 and index.vector("notes", stale) is None
    index.drop("notes")
    assert index.count("notes") == 0


def test_refresh_takes_in_vectors_another_process_wrote(engine: SqliteEngine, tmp_path: Path) -> None:
    owners = add_rows(engine, "notes", ["alice"] * 3)
    index = loaded(engine, "notes")
    worker = open_engine(tmp_path / "db.sqlite3")  # `nanotypedb worker`: its own connections to the file
    try:
        first = next(iter(owners))
        query = np.arange(DIMS, dtype=np.float32)
        worker.write_sync(lambda tx: store.put(tx.conn, "notes", first, query, "re-embedded"))
        assert index.score("notes", first, query) < 0.99  # not seen yet
        assert engine.read_sync(lambda tx: index.refresh(tx.conn)).value == 1
        assert index.search("notes", query, 1)[0] == (first, pytest.approx(1.0, abs=1e-6))
        assert engine.read_sync(lambda tx: index.refresh(tx.conn)).value == 0  # nothing new
    finally:
        worker.close()
