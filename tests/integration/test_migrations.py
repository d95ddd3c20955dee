"""Schema and migrations on real files: a pre-v6 database upgrades, drift stops start-up, history is checked."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Literal

import pytest

from nanotypedb import App, ConfigError, MigrationError, RowNotFound, SchemaError, Table, column
from nanotypedb.demo.migrations import HISTORY
from nanotypedb.demo.tasks import app as tasks_app
from nanotypedb.storage.engine import OpenReport, SqliteEngine
from nanotypedb.storage.migrations import Migration
from nanotypedb.storage.schema import TableSchema
from nanotypedb.testing import serve

FIXTURE = Path(__file__).parent.parent / "fixtures" / "pre_v6.sqlite3"
SYSTEM_TABLES = {"_webhooks", "_files", "_cron_jobs", "_environments"}


def _history(upto: int = 7) -> list[Migration]:
    return [Migration(n, name, sql=sql) for n, name, sql in HISTORY if n <= upto]


def _sql(path: Path, query: str) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(query).fetchall()


def _columns(path: Path, table: str) -> dict[str, tuple[str, bool]]:
    return {r[1]: (r[2], bool(r[3])) for r in _sql(path, f"PRAGMA table_info({table})")}


def _tables(path: Path) -> set[str]:
    return {r[0] for r in _sql(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}


def _open(path: Path, tables: Iterable[TableSchema] = (), migrations: Iterable[Migration] = ()) -> OpenReport:
    engine = SqliteEngine(path)
    try:
        return engine.open(tables, migrations)
    finally:
        engine.close()


@contextmanager
def _opened(path: Path, *tables: type[Table]) -> Iterator[SqliteEngine]:
    engine = SqliteEngine(path)
    engine.open([t.__schema__ for t in tables])
    try:
        yield engine
    finally:
        engine.close()


@pytest.fixture
def pre_v6(tmp_path: Path) -> Path:
    """A data directory whose dev database is a copy of the committed pre-v6 file."""
    data = tmp_path / "data"
    db = data / "env" / "dev" / "db.sqlite3"
    db.parent.mkdir(parents=True)
    shutil.copy(FIXTURE, db)
    return data


def _db(data: Path) -> Path:
    return data / "env" / "dev" / "db.sqlite3"


# -- (1) a real pre-v6 database ---------------------------------------------------------


def test_the_fixture_is_a_v5_database_without_owners() -> None:
    assert [r[0] for r in _sql(FIXTURE, "SELECT number FROM _migrations ORDER BY number")] == [1, 2, 3, 4, 5]
    assert "owner_id" not in _columns(FIXTURE, "tasks") and not SYSTEM_TABLES & _tables(FIXTURE)
    assert _sql(FIXTURE, "SELECT count(*) FROM tasks") == [(4,)]


def test_opening_a_pre_v6_database_applies_exactly_v6_and_v7(pre_v6: Path) -> None:
    report = _open(_db(pre_v6), tasks_app.tables.values(), tasks_app.migrations)
    assert [m.number for m in report.migrations] == [6, 7]
    # After the migrations only an additive change is left for step 2: the column embeddings added.
    assert report.sync.created_tables == report.sync.created_indexes == ()
    assert report.sync.added_columns == ("tasks.vector_status",)
    again = _open(_db(pre_v6), tasks_app.tables.values(), tasks_app.migrations)
    assert again.migrations == []


def test_a_pre_v6_database_upgrades_and_records_its_history(pre_v6: Path) -> None:
    before = dict(_sql(FIXTURE, "SELECT number, applied_at FROM _migrations"))
    with serve(tasks_app, pre_v6):
        pass
    db = _db(pre_v6)
    rows = {r[0]: r[1:] for r in _sql(db, "SELECT number, name, checksum, applied_at FROM _migrations")}
    assert {n: (name, checksum) for n, (name, checksum, _) in rows.items()} == {
        m.number: (m.name, m.checksum) for m in _history()
    }
    assert {n: rows[n][2] for n in before} == before  # v1-v5 were not run again
    assert min(rows[6][2], rows[7][2]) > max(before.values())
    assert _tables(db) >= SYSTEM_TABLES
    assert _columns(db, "tasks")["owner_id"] == ("TEXT", False)
    indexes = {r[1] for r in _sql(db, "PRAGMA index_list(tasks)")}
    assert "ix_tasks_owner_id" in indexes and "ix_tasks_status" not in indexes


def test_after_the_upgrade_old_rows_belong_to_nobody_and_new_rows_to_their_owner(pre_v6: Path) -> None:
    with serve(tasks_app, pre_v6) as server:
        admin = server.client(server.admin_key)
        legacy = admin.call("listTasks", limit=100)
        assert sorted(t["title"] for t in legacy) == [f"legacy task {i}" for i in range(4)]
        assert all(t["owner_id"] is None for t in legacy)
        assert {t["title"]: t["status"] for t in legacy}["legacy task 2"] == "completed"  # "done", by v5
        assert {t["title"]: t["updated_at"] for t in legacy}["legacy task 3"] == "2025-02-01T12:30:00+00:00"
        alice = server.client(server.token("alice"))
        assert alice.call("listTasks") == [] and alice.call("countTasks") == 0
        for name in ("getTask", "completeTask", "deleteTask"):
            with pytest.raises(RowNotFound):
                alice.call(name, id=legacy[0]["id"])
        mine = alice.call("createTask", title="after the upgrade")
        assert mine["owner_id"] == "alice" and alice.last_version == 5  # the version went on from v5's 4
        assert [t["id"] for t in alice.call("listTasks")] == [mine["id"]]
        assert server.client(server.token("bob")).call("listTasks") == []
        assert admin.call("countTasks") == 5


def test_an_upgraded_database_keeps_its_data_across_restarts(pre_v6: Path) -> None:
    with serve(tasks_app, pre_v6) as server:
        token = server.token("alice")
        server.client(token).call("createTask", title="mine")
    with serve(tasks_app, pre_v6) as again:
        assert [t["title"] for t in again.client(token).call("listTasks")] == ["mine"]
        assert len(again.client(again.admin_key).call("listTasks", limit=100)) == 5
    assert len(_sql(_db(pre_v6), "SELECT number FROM _migrations")) == 7


def test_an_edited_history_stops_the_upgrade_before_it_changes_anything(pre_v6: Path) -> None:
    edited = _history()
    edited[1] = Migration(2, edited[1].name, sql=f"{edited[1].sql} -- edited")
    with pytest.raises(MigrationError):
        _open(_db(pre_v6), tasks_app.tables.values(), edited)
    assert [r[0] for r in _sql(_db(pre_v6), "SELECT number FROM _migrations")] == [1, 2, 3, 4, 5]
    assert "owner_id" not in _columns(_db(pre_v6), "tasks")


# -- (2) schema drift at open -------------------------------------------------------------


class Gadget(Table, table="gadgets"):
    name: str
    weight: int


class GadgetWeightAsText(Table, table="gadgets"):
    name: str
    weight: str


class GadgetWeightAsFloat(Table, table="gadgets"):
    name: str
    weight: float


class GadgetWithoutWeight(Table, table="gadgets"):
    name: str


class GadgetWithPrice(Table, table="gadgets"):
    name: str
    weight: int
    price: int


class GadgetWithTags(Table, table="gadgets"):
    name: str
    weight: int
    tags: list[str] = column(default_factory=list)


class GadgetWeightOptional(Table, table="gadgets"):
    name: str
    weight: int | None = None


DRIFTS: list[tuple[type[Table], str]] = [
    (GadgetWeightAsText, "weight"),
    (GadgetWeightAsFloat, "weight"),
    (GadgetWithoutWeight, "weight"),
    (GadgetWithPrice, "price"),
    (GadgetWithTags, "tags"),
    (GadgetWeightOptional, "weight"),
]


@pytest.mark.parametrize(("declared", "column_name"), DRIFTS, ids=lambda x: x.__name__ if isinstance(x, type) else x)
def test_a_change_that_needs_a_migration_stops_start_up(
    tmp_path: Path, declared: type[Table], column_name: str
) -> None:
    path = tmp_path / "db.sqlite3"
    with _opened(path, Gadget) as engine:
        engine.write_sync(lambda tx: tx.insert(tx.table("gadgets"), {"name": "g", "weight": 1}))
    with pytest.raises(SchemaError) as raised:
        _open(path, [declared.__schema__])
    message = raised.value.message
    assert "'gadgets'" in message and f"'{column_name}'" in message and "numbered migration" in message
    assert _columns(path, "gadgets") == {"id": ("INTEGER", False), "name": ("TEXT", True), "weight": ("INTEGER", True)}


def test_a_nullable_column_made_required_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    _open(path, [GadgetWeightOptional.__schema__])
    with pytest.raises(SchemaError) as raised:
        _open(path, [Gadget.__schema__])
    assert "'gadgets'" in raised.value.message and "'weight'" in raised.value.message


def test_a_drift_error_applies_none_of_the_additive_changes(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    _open(path, [Gadget.__schema__, Plain.__schema__])
    with pytest.raises(SchemaError):
        _open(path, [Fresh.__schema__, PlainGrown.__schema__, GadgetWithoutWeight.__schema__])
    assert "fresh" not in _tables(path) and set(_columns(path, "plain")) == {"id", "label"}
    assert _open(path, [Gadget.__schema__, Plain.__schema__]).sync.created_tables == ()  # still opens as before


class Plain(Table, table="plain"):
    label: str


class PlainGrown(Table, table="plain", indexes=[("label", "size")]):
    label: str = column(index=True)
    note: str | None = None
    size: int = 3
    ratio: float = 0.5
    active: bool = True
    kind: Literal["a", "b"] = "b"
    code: str | None = column(None, unique=True)


class Fresh(Table, table="fresh"):
    value: int = column(index=True)


def test_additive_changes_apply_at_start_up_and_old_rows_get_defaults(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    with _opened(path, Plain) as engine:
        engine.write_sync(lambda tx: tx.insert(tx.table("plain"), {"label": "old"}))
    report = _open(path, [PlainGrown.__schema__, Fresh.__schema__])
    assert report.sync.created_tables == ("fresh",)
    assert set(report.sync.added_columns) == {f"plain.{c}" for c in ("note", "size", "ratio", "active", "kind", "code")}
    assert set(report.sync.created_indexes) == {"ix_plain_label_size", "ix_plain_label", "ux_plain_code"}
    assert {r[1] for r in _sql(path, "PRAGMA index_list(fresh)")} == {"ix_fresh_value"}
    with _opened(path, PlainGrown, Fresh) as engine:
        (old,) = engine.read_sync(lambda tx: tx.conn.execute("SELECT * FROM plain").fetchall()).value
        row = engine.read_sync(lambda tx: tx.get(tx.table("plain"), old[0])).value
    assert row == {
        "id": 1,
        "label": "old",
        "note": None,
        "size": 3,
        "ratio": 0.5,
        "active": True,
        "kind": "b",
        "code": None,
    }
    again = _open(path, [PlainGrown.__schema__, Fresh.__schema__])
    assert again.sync.created_tables == again.sync.added_columns == again.sync.created_indexes == ()


def test_a_new_unique_index_is_enforced(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    _open(path, [Plain.__schema__])
    with _opened(path, PlainGrown) as engine:
        engine.write_sync(lambda tx: tx.insert(tx.table("plain"), {"label": "a", "code": "x"}))
        with pytest.raises(sqlite3.IntegrityError):
            engine.write_sync(lambda tx: tx.insert(tx.table("plain"), {"label": "b", "code": "x"}))


# -- (3) numbered migrations --------------------------------------------------------------

MAKE_T = Migration(1, "make t", sql="CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")


def _fill_t(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO t (v) VALUES ('a')")


def _fill_t_differently(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO t (v) VALUES ('b')")


def _half_then_fail(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE u (id INTEGER PRIMARY KEY)")
    conn.execute("INSERT INTO t (v) VALUES ('half')")
    raise ValueError("a bug in the migration")


def _recorded(path: Path) -> dict[int, str]:
    return dict(_sql(path, "SELECT number, checksum FROM _migrations"))


def test_migrations_are_recorded_with_their_checksums_in_numeric_order(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    fill = Migration(2, "fill t", fn=_fill_t)
    tag = Migration(3, "tag t", sql="UPDATE t SET v = v || '!'; INSERT INTO t (v) VALUES ('c')")
    report = _open(path, [], [tag, fill, MAKE_T])
    assert [m.number for m in report.migrations] == [1, 2, 3]
    assert _recorded(path) == {1: MAKE_T.checksum, 2: fill.checksum, 3: tag.checksum}
    assert len({MAKE_T.checksum, fill.checksum, tag.checksum}) == 3
    assert _sql(path, "SELECT v FROM t ORDER BY id") == [("a!",), ("c",)]
    assert _open(path, [], [MAKE_T, fill, tag]).migrations == []  # applied once only


def test_an_edited_sql_migration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    _open(path, [], [MAKE_T])
    edited = Migration(1, "make t", sql="CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, w TEXT)")
    with pytest.raises(MigrationError):
        _open(path, [], [edited, Migration(2, "fill t", fn=_fill_t)])
    assert set(_recorded(path)) == {1} and _sql(path, "SELECT count(*) FROM t") == [(0,)]


def test_an_edited_function_migration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    _open(path, [], [MAKE_T, Migration(2, "fill t", fn=_fill_t)])
    with pytest.raises(MigrationError):
        _open(path, [], [MAKE_T, Migration(2, "fill t", fn=_fill_t_differently)])


def test_renaming_or_reindenting_an_applied_migration_is_not_an_edit(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    _open(path, [], [MAKE_T])
    same = Migration(1, "create the t table", sql=f"\n    {MAKE_T.sql}\n")
    assert _open(path, [], [same]).migrations == []


@pytest.mark.parametrize(
    "broken",
    [
        Migration(
            2,
            "half done",
            sql="CREATE TABLE u (id INTEGER PRIMARY KEY); INSERT INTO t (v) VALUES ('half');"
            " INSERT INTO nowhere VALUES (1)",
        ),
        Migration(2, "half done", fn=_half_then_fail),
    ],
    ids=["sql", "function"],
)
def test_a_failing_migration_rolls_back_and_is_not_recorded(tmp_path: Path, broken: Migration) -> None:
    path = tmp_path / "db.sqlite3"
    after = Migration(3, "after", sql="CREATE TABLE w (id INTEGER PRIMARY KEY)")
    with pytest.raises(MigrationError):
        _open(path, [], [MAKE_T, broken, after])
    assert set(_recorded(path)) == {1}
    assert _tables(path) & {"u", "w"} == set() and _sql(path, "SELECT count(*) FROM t") == [(0,)]
    fixed = Migration(2, "half done", fn=_fill_t)
    assert [m.number for m in _open(path, [], [MAKE_T, fixed, after]).migrations] == [2, 3]


def test_two_migrations_with_one_number_are_a_config_error(tmp_path: Path) -> None:
    app = App("dupes")
    app.migration(1, "one", sql="SELECT 1")
    with pytest.raises(ConfigError):
        app.migration(1, "one again", sql="SELECT 2")
    with pytest.raises(ConfigError):
        app.migration(0, "zero", sql="SELECT 0")
    with pytest.raises(ConfigError):
        _open(tmp_path / "db.sqlite3", [], [MAKE_T, Migration(1, "again", sql="SELECT 1")])
    assert app.migrations == [Migration(1, "one", sql="SELECT 1")]
