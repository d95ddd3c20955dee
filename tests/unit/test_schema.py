"""Table declarations: what a class becomes (columns, kinds, defaults, indexes) and what a write must pass."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from typing import Any, Literal

import pytest

from nanotypedb import App, ConfigError, SchemaError, Table, ValidationFailed, column
from nanotypedb.storage.query import Select
from nanotypedb.storage.schema import Index, TableSchema, quote
from nanotypedb.storage.transaction import Transaction

WHEN = dt.datetime(2025, 3, 4, 5, 6, 7, 890, tzinfo=dt.timezone(dt.timedelta(hours=2)))


def _made_at() -> dt.datetime:
    return WHEN


class Gadget(Table, table="gadgets", indexes=[("kind", "size")]):
    name: str
    size: int = 3
    price: float | None = None
    active: bool = True
    blob: bytes | None = None
    made_at: dt.datetime = column(default_factory=_made_at)
    meta: dict[str, Any] = column(default_factory=dict)
    tags: list[str] | None = None
    kind: Literal["a", "b"] = "a"
    level: Literal[1, 2, 3] = 1
    code: str = column("c-0", unique=True)
    owner: str | None = column(None, index=True)


SCHEMA = Gadget.__schema__


def _field_of(raised: pytest.ExceptionInfo[ValidationFailed]) -> set[str]:
    assert raised.value.code == "ValidationFailed" and raised.value.status == 400
    return {d["field"] for d in raised.value.details}


# -- declarations ---------------------------------------------------------------


def test_each_python_type_maps_to_a_kind_and_sql_type() -> None:
    kinds = {name: (c.kind, c.sql_type) for name, c in SCHEMA.columns.items()}
    assert kinds == {
        "name": ("str", "TEXT"),
        "size": ("int", "INTEGER"),
        "price": ("float", "REAL"),
        "active": ("bool", "INTEGER"),
        "blob": ("bytes", "BLOB"),
        "made_at": ("datetime", "TEXT"),
        "meta": ("json", "TEXT"),
        "tags": ("json", "TEXT"),
        "kind": ("str", "TEXT"),
        "level": ("int", "INTEGER"),
        "code": ("str", "TEXT"),
        "owner": ("str", "TEXT"),
    }


def test_optional_types_are_nullable_and_nothing_else_is() -> None:
    nullable = {name for name, c in SCHEMA.columns.items() if c.nullable}
    assert nullable == {"price", "blob", "tags", "owner"}


def test_defaults_and_choices_are_kept() -> None:
    cols = SCHEMA.columns
    assert cols["size"].default == 3 and cols["active"].default is True and cols["code"].default == "c-0"
    assert cols["made_at"].default_factory is _made_at and cols["meta"].default_factory is dict
    assert not cols["name"].has_default and cols["price"].has_default  # nullable means default NULL
    assert cols["kind"].choices == ("a", "b") and cols["level"].choices == (1, 2, 3)
    assert cols["name"].choices is None


def test_indexes_come_from_the_class_and_its_columns() -> None:
    assert set(SCHEMA.indexes) == {
        Index(("kind", "size")),
        Index(("code",), unique=True),
        Index(("owner",)),
    }
    assert {i.name("gadgets") for i in SCHEMA.indexes} == {
        "ix_gadgets_kind_size",
        "ux_gadgets_code",
        "ix_gadgets_owner",
    }


def test_the_ddl_has_an_integer_id_constraints_and_constant_defaults() -> None:
    create, *indexes = SCHEMA.ddl()
    assert create.startswith('CREATE TABLE IF NOT EXISTS "gadgets" ("id" INTEGER PRIMARY KEY, "name" TEXT NOT NULL,')
    assert '"size" INTEGER NOT NULL DEFAULT 3' in create and '"active" INTEGER NOT NULL DEFAULT 1' in create
    assert '"price" REAL,' in create and '"made_at" TEXT NOT NULL,' in create
    assert any(i.startswith('CREATE UNIQUE INDEX IF NOT EXISTS "ux_gadgets_code"') for i in indexes)


def test_the_table_name_defaults_to_the_class_name() -> None:
    class Widget(Table):
        label: str

    assert Widget.__schema__.name == "widget" and Widget.__schema__.model is Widget


def test_an_app_refuses_two_tables_of_one_name() -> None:
    class First(Table, table="things"):
        a: str

    class Second(Table, table="things"):
        b: str

    app = App("dupes")
    app.table(First)
    with pytest.raises(ConfigError):
        app.table(Second)


# -- names ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["_secret", "_migrations", "_meta"])
def test_names_starting_with_an_underscore_are_reserved(name: str) -> None:
    with pytest.raises(SchemaError):
        type("Reserved", (Table,), {"__annotations__": {"a": str}}, table=name)


@pytest.mark.parametrize(
    "name", ["bad name", "1abc", "drop;table", 'a"b', "tâches", "tasks\n", "x" * 64, "sqlite_stat1", "SQLITE_x"]
)
def test_a_table_name_that_is_not_a_plain_identifier_is_refused(name: str) -> None:
    with pytest.raises(SchemaError):
        type("Bad", (Table,), {"__annotations__": {"a": str}}, table=name)


@pytest.mark.parametrize("name", ["bad name", "a-b", 'x"', "col\n"])
def test_a_column_name_that_is_not_a_plain_identifier_is_refused(name: str) -> None:
    with pytest.raises(SchemaError):
        type("Bad", (Table,), {"__annotations__": {name: str}}, table="bad")


@pytest.mark.parametrize("indexes", [[("a b",)], [("nowhere",)], [("a", "missing")]])
def test_an_index_over_a_bad_or_unknown_column_is_refused(indexes: list[tuple[str, ...]]) -> None:
    with pytest.raises(SchemaError):
        type("Bad", (Table,), {"__annotations__": {"a": str}}, table="bad", indexes=indexes)


@pytest.mark.parametrize("annotation", [set[int], int | str, object, dt.date])
def test_a_type_that_cannot_be_stored_is_refused(annotation: Any) -> None:
    with pytest.raises(SchemaError):
        type("Bad", (Table,), {"__annotations__": {"a": annotation}}, table="bad")


def test_quote_refuses_what_is_not_an_identifier() -> None:
    assert quote("tasks") == '"tasks"'
    with pytest.raises(SchemaError):
        quote('tasks"; DROP TABLE tasks; --')


# -- write validation -----------------------------------------------------------


def test_an_insert_fills_defaults_and_converts_for_sqlite() -> None:
    row = SCHEMA.encode_insert({"name": "n"})
    assert row == {
        "name": "n",
        "size": 3,
        "price": None,
        "active": 1,
        "blob": None,
        "made_at": WHEN.isoformat(),
        "meta": "{}",
        "tags": None,
        "kind": "a",
        "level": 1,
        "code": "c-0",
        "owner": None,
    }


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"name": 5}, "name"),
        ({"name": True}, "name"),
        ({"size": "3"}, "size"),
        ({"size": 2.5}, "size"),
        ({"size": True}, "size"),
        ({"price": False}, "price"),
        ({"price": "1.5"}, "price"),
        ({"active": 1}, "active"),
        ({"active": "yes"}, "active"),
        ({"blob": "text"}, "blob"),
        ({"made_at": "yesterday"}, "made_at"),
        ({"made_at": dt.date(2025, 1, 1)}, "made_at"),
        ({"meta": {"x": object()}}, "meta"),
        ({"kind": "c"}, "kind"),
        ({"level": 4}, "level"),
        ({"level": True}, "level"),
        ({"level": "1"}, "level"),
        ({"name": None}, "name"),
        ({"size": None}, "size"),
    ],
)
def test_a_value_of_the_wrong_type_or_choice_is_refused(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        SCHEMA.encode_insert({"name": "n", **values})
    assert _field_of(raised) == {field}


def test_a_required_column_must_be_given() -> None:
    with pytest.raises(ValidationFailed) as raised:
        SCHEMA.encode_insert({"size": 1})
    assert _field_of(raised) == {"name"}


def test_unknown_columns_are_all_named() -> None:
    with pytest.raises(ValidationFailed) as raised:
        SCHEMA.encode_insert({"name": "n", "colour": "red", "weight": 2})
    assert _field_of(raised) == {"colour", "weight"}


def test_an_int_is_a_valid_float_and_none_a_valid_optional() -> None:
    row = SCHEMA.encode_insert({"name": "n", "price": 2, "tags": None, "owner": None})
    assert row["price"] == 2 and row["tags"] is None


@pytest.mark.parametrize(
    ("values", "field"),
    [({"id": 9}, "id"), ({"colour": "red"}, "colour"), ({"size": "big"}, "size"), ({"name": None}, "name")],
)
def test_an_update_is_checked_like_an_insert(values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        SCHEMA.encode_update(values)
    assert _field_of(raised) == {field}


def test_an_update_converts_only_what_it_changes() -> None:
    assert SCHEMA.encode_update({"active": False, "meta": {"a": [1]}}) == {"active": 0, "meta": '{"a":[1]}'}


# -- round trip through SQLite --------------------------------------------------


@pytest.fixture
def tx() -> Iterator[Transaction]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for statement in SCHEMA.ddl():
            conn.execute(statement)
        yield Transaction(conn, {"gadgets": SCHEMA}, writable=True)
    finally:
        conn.close()


def _read_back(tx: Transaction, row_id: int) -> dict[str, Any]:
    row = tx.get(SCHEMA, row_id)
    assert row is not None
    return row


def test_values_come_back_as_the_python_types_written(tx: Transaction) -> None:
    naive = dt.datetime(2024, 12, 31, 23, 59, 59)
    written = {
        "name": "n",
        "price": 1.25,
        "active": False,
        "blob": b"\x00\xff",
        "made_at": naive,
        "meta": {"nested": {"list": [1, "two", None, True]}, "n": 1.5},
        "tags": ["a", "b"],
        "level": 3,
    }
    inserted = tx.insert(SCHEMA, written)
    back = _read_back(tx, inserted["id"])
    assert {k: back[k] for k in written} == written
    assert back["active"] is False and type(back["made_at"]) is dt.datetime
    assert inserted == back  # the insert's own result matches what a read returns


def test_an_aware_datetime_keeps_its_offset_and_defaults_round_trip(tx: Transaction) -> None:
    back = _read_back(tx, tx.insert(SCHEMA, {"name": "n"})["id"])
    assert back["made_at"] == WHEN and back["made_at"].utcoffset() == dt.timedelta(hours=2)
    assert back["active"] is True and back["meta"] == {} and back["tags"] is None and back["price"] is None


def test_an_iso_string_is_stored_as_a_datetime(tx: Transaction) -> None:
    row_id = tx.insert(SCHEMA, {"name": "n", "made_at": "2025-01-02T03:04:05+00:00"})["id"]
    assert _read_back(tx, row_id)["made_at"] == dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_an_update_round_trips_too(tx: Transaction) -> None:
    row_id = tx.insert(SCHEMA, {"name": "n"})["id"]
    result = tx.update(SCHEMA, row_id, {"active": False, "tags": [], "made_at": WHEN + dt.timedelta(days=1)})
    assert result is not None
    before, after = result
    assert before["active"] is True and after["active"] is False and after["tags"] == []
    assert after == _read_back(tx, row_id)


def test_rows_listed_by_a_select_are_decoded(tx: Transaction) -> None:
    tx.insert(SCHEMA, {"name": "a", "tags": ["x"], "active": False})
    tx.insert(SCHEMA, {"name": "b", "code": "c-1"})
    rows = tx.select(Select(SCHEMA, order=(("id", False),)))
    assert [(r["name"], r["tags"], r["active"], r["made_at"]) for r in rows] == [
        ("a", ["x"], False, WHEN),
        ("b", None, True, WHEN),
    ]


def test_the_sql_schema_enforces_not_null_too(tx: Transaction) -> None:
    # A write that skips validation (raw SQL in a migration, say) still meets the constraint.
    with pytest.raises(sqlite3.IntegrityError):
        tx.conn.execute("INSERT INTO gadgets (name, made_at, meta) VALUES (NULL, 'x', '{}')")


def test_a_table_schema_names_an_unknown_column() -> None:
    with pytest.raises(ValidationFailed) as raised:
        SCHEMA.column("colour")
    assert _field_of(raised) == {"colour"}
    assert isinstance(SCHEMA, TableSchema) and SCHEMA.has_column("id") and not SCHEMA.has_column("colour")
