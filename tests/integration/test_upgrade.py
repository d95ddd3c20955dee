"""Schema history: a real pre-v6 database upgrades; drift and edited migrations stop start-up."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from nanotypedb import App, ConfigError, MigrationError, RowNotFound, SchemaError, Table, column
from nanotypedb.demo.migrations import HISTORY
from nanotypedb.demo.tasks import app as tasks_app
from nanotypedb.storage.engine import SqliteEngine
from nanotypedb.storage.migrations import Migration
from nanotypedb.testing import serve

FIXTURE = Path(__file__).parent.parent / "fixtures" / "pre_v6.sqlite3"


def _copy_fixture(data: Path) -> Path:
    db = data / "env" / "dev" / "db.sqlite3"
    db.parent.mkdir(parents=True)
    shutil.copy(FIXTURE, db)
    return db


def test_a_pre_v6_database_upgrades_cleanly(tmp_path: Path) -> None:
    data = tmp_path / "data"
    db = _copy_fixture(data)
    with serve(tasks_app, data) as server:
        admin = server.client(server.admin_key)
        legacy = admin.call("listTasks", limit=100)
        assert sorted(t["title"] for t in legacy) == [f"legacy task {i}" for i in range(4)]
        assert {t["status"] for t in legacy} == {"pending", "completed"}  # v5 normalised "done"
        assert all(t["owner_id"] is None for t in legacy)
        alice = server.client(server.token("alice"))
        assert alice.call("listTasks") == []  # rows from before owners belong to nobody
        with pytest.raises(RowNotFound):
            alice.call("getTask", id=legacy[0]["id"])
        mine = alice.call("createTask", title="after the upgrade")
        assert mine["owner_id"] == "alice" and mine["id"] > max(t["id"] for t in legacy)
    conn = sqlite3.connect(db)
    try:
        recorded = dict(conn.execute("SELECT number, checksum FROM _migrations").fetchall())
        assert recorded == {n: Migration(n, name, sql=sql).checksum for n, name, sql in HISTORY}
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert {"_webhooks", "_files", "_cron_jobs", "_environments"} <= tables
        indexes = {r[1] for r in conn.execute("PRAGMA index_list(tasks)")}
        assert "ix_tasks_owner_id" in indexes and "ix_tasks_status" not in indexes
    finally:
        conn.close()


def test_an_edited_applied_migration_stops_start_up(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _copy_fixture(data)
    edited = App("tasks")
    for number, name, sql in HISTORY:
        edited.migration(number, name, sql=sql + " -- edited" if number == 2 else sql)
    edited.tables = tasks_app.tables
    with pytest.raises(MigrationError) as raised, serve(edited, data):
        pass
    assert "Migration 2" in raised.value.message


def test_a_failing_migration_rolls_back_and_is_not_recorded(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    broken = [
        Migration(1, "make t", sql="CREATE TABLE t (id INTEGER PRIMARY KEY)"),
        Migration(2, "half done", sql="CREATE TABLE u (id INTEGER PRIMARY KEY); INSERT INTO nowhere VALUES (1)"),
    ]
    with pytest.raises(MigrationError):
        SqliteEngine(path).open([], broken)
    conn = sqlite3.connect(path)
    try:
        assert [r[0] for r in conn.execute("SELECT number FROM _migrations")] == [1]
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'u'").fetchone() is None
    finally:
        conn.close()


def test_two_migrations_with_one_number_are_refused() -> None:
    app = App("dupes")
    app.migration(1, "one", sql="SELECT 1")
    with pytest.raises(ConfigError):
        app.migration(1, "one again", sql="SELECT 2")


def _reopen(path: Path, table: type[Table]) -> None:
    engine = SqliteEngine(path)
    engine.open([table.__schema__])
    engine.close()


def test_additive_changes_apply_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"

    class V1(Table, table="gadgets"):
        name: str

    class V2(Table, table="gadgets"):
        name: str = column(index=True)
        colour: str | None = None
        size: int = 3

    class Other(Table, table="others"):
        label: str

    _reopen(path, V1)
    engine = SqliteEngine(path)
    report = engine.open([V2.__schema__, Other.__schema__])
    engine.close()
    assert report.sync.created_tables == ("others",)
    assert set(report.sync.added_columns) == {"gadgets.colour", "gadgets.size"}
    assert report.sync.created_indexes == ("ix_gadgets_name",)


@pytest.mark.parametrize("change", ["type", "removed", "not null without default", "nullability"])
def test_changes_that_need_a_migration_stop_start_up(tmp_path: Path, change: str) -> None:
    path = tmp_path / "db.sqlite3"

    class Before(Table, table="gadgets"):
        name: str
        weight: int

    _reopen(path, Before)
    after: type[Table]
    if change == "type":

        class After(Table, table="gadgets"):
            name: str
            weight: str

        after, column_name = After, "weight"
    elif change == "removed":

        class Removed(Table, table="gadgets"):
            name: str

        after, column_name = Removed, "weight"
    elif change == "not null without default":

        class Required(Table, table="gadgets"):
            name: str
            weight: int
            price: int

        after, column_name = Required, "price"
    else:

        class Nullable(Table, table="gadgets"):
            name: str
            weight: int | None = None

        after, column_name = Nullable, "weight"
    with pytest.raises(SchemaError) as raised:
        _reopen(path, after)
    message = raised.value.message
    assert "'gadgets'" in message and f"'{column_name}'" in message and "migration" in message
