"""Reads compiled to SQL: conditions with encoded parameters, ordering, limits and keyset cursors."""

from __future__ import annotations

import base64
import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from nanotypedb import Table, ValidationFailed
from nanotypedb.storage.query import (
    FALSE,
    Condition,
    Select,
    compare,
    cursor_condition,
    decode_cursor,
    encode_cursor,
    parse_order,
)
from nanotypedb.storage.transaction import Transaction

DAY = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


class Item(Table, table="items"):
    label: str
    size: int = 0
    active: bool = True
    seen_at: dt.datetime = DAY
    note: str | None = None


ITEMS = Item.__schema__


def _cursor_of(value: Any) -> str:
    # json, not orjson: a forged cursor may hold integers orjson refuses to write.
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.fixture
def tx() -> Iterator[Transaction]:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    try:
        for statement in ITEMS.ddl():
            conn.execute(statement)
        tx = Transaction(conn, {"items": ITEMS}, writable=True)
        for i, (label, size) in enumerate([("a", 1), ("b", 2), ("c", 2), ("d", 2), ("e", 3), ("f", 5), ("g", 5)]):
            tx.insert(ITEMS, {"label": label, "size": size, "active": i % 2 == 0, "note": None if i % 3 else "x"})
        yield tx
    finally:
        conn.close()


def _labels(tx: Transaction, *conditions: Condition, **options: Any) -> list[str]:
    return [r["label"] for r in tx.select(Select(ITEMS, conditions, **options))]


# -- Select ---------------------------------------------------------------------


def test_a_bare_select_reads_the_whole_table() -> None:
    assert Select(ITEMS).sql() == ('SELECT * FROM "items"', [])
    assert Select(ITEMS).count_sql() == ('SELECT count(*) FROM "items"', [])


def test_conditions_are_anded_then_ordered_then_limited() -> None:
    select = Select(
        ITEMS,
        (compare(ITEMS, "label", "=", "a"), compare(ITEMS, "size", ">", 1)),
        order=(("size", True), ("id", False)),
        limit=10,
    )
    sql, params = select.sql()
    assert sql == 'SELECT * FROM "items" WHERE ("label" = ?) AND ("size" > ?) ORDER BY "size" DESC, "id" LIMIT ?'
    assert params == ["a", 1, 10]
    assert select.count_sql() == ('SELECT count(*) FROM "items" WHERE ("label" = ?) AND ("size" > ?)', ["a", 1])


def test_selects_run_as_compiled(tx: Transaction) -> None:
    assert _labels(tx, compare(ITEMS, "size", "=", 2)) == ["b", "c", "d"]
    assert _labels(tx, compare(ITEMS, "size", ">=", 3), order=(("id", True),)) == ["g", "f", "e"]
    assert _labels(tx, compare(ITEMS, "active", "=", False)) == ["b", "d", "f"]
    assert _labels(tx, order=(("size", True), ("id", False)), limit=3) == ["f", "g", "e"]
    assert tx.count(Select(ITEMS, (compare(ITEMS, "size", "!=", 2),))) == 4


# -- compare --------------------------------------------------------------------


def test_values_are_encoded_as_the_column_stores_them() -> None:
    assert compare(ITEMS, "active", "=", True).params == (1,)
    assert compare(ITEMS, "seen_at", "<", DAY).params == (DAY.isoformat(),)
    assert compare(ITEMS, "id", "=", 7) == Condition('"id" = ?', (7,), ("id", 7), frozenset({"id"}))


def test_only_equality_names_a_filter() -> None:
    assert compare(ITEMS, "label", "=", "a").eq == ("label", "a")
    assert all(compare(ITEMS, "size", op, 1).eq is None for op in ("!=", "<", "<=", ">", ">="))
    assert compare(ITEMS, "size", "in", [1, 2]).eq is None
    conditions = (compare(ITEMS, "label", "=", "a"), compare(ITEMS, "size", ">", 1), compare(ITEMS, "note", "=", None))
    assert Select(ITEMS, conditions).equality_filters() == {"label": "a", "note": None}


def test_equality_with_none_is_is_null(tx: Transaction) -> None:
    is_null, not_null = compare(ITEMS, "note", "=", None), compare(ITEMS, "note", "!=", None)
    assert (is_null.sql, is_null.params) == ('"note" IS NULL', ())
    assert (not_null.sql, not_null.eq) == ('"note" IS NOT NULL', None)
    assert _labels(tx, is_null) == ["b", "c", "e", "f"]
    assert _labels(tx, not_null) == ["a", "d", "g"]


def test_in_matches_any_of_its_values(tx: Transaction) -> None:
    cond = compare(ITEMS, "size", "in", [1, 5])
    assert (cond.sql, cond.params) == ('"size" IN (?, ?)', (1, 5))
    assert _labels(tx, cond) == ["a", "f", "g"]


def test_in_with_an_empty_list_matches_nothing(tx: Transaction) -> None:
    assert compare(ITEMS, "size", "in", []) == FALSE
    assert _labels(tx, compare(ITEMS, "label", "in", [])) == []
    assert tx.count(Select(ITEMS, (compare(ITEMS, "id", "in", ()),))) == 0


@pytest.mark.parametrize("value", ["ab", 5, None])
def test_in_needs_a_list(value: Any) -> None:
    # A bare string would otherwise be read as the list of its characters.
    with pytest.raises(ValidationFailed):
        compare(ITEMS, "label", "in", value)


@pytest.mark.parametrize(
    ("column", "op", "value"),
    [
        ("size", "LIKE", 1),
        ("size", "= 1 OR 1 =", 1),
        ("colour", "=", "red"),
        ("size", "=", "big"),
        ("active", "=", 1),
        ("seen_at", ">", "not a date"),
        ("size", "in", [1, "two"]),
    ],
)
def test_a_bad_operator_column_or_value_is_refused(column: str, op: str, value: Any) -> None:
    with pytest.raises(ValidationFailed):
        compare(ITEMS, column, op, value)


def test_parse_order_reads_a_sign_and_checks_the_column() -> None:
    assert parse_order(ITEMS, "-size") == ("size", True)
    assert parse_order(ITEMS, "+size") == ("size", False)
    assert parse_order(ITEMS, "id") == ("id", False)
    with pytest.raises(ValidationFailed):
        parse_order(ITEMS, "-colour")


# -- cursors --------------------------------------------------------------------


def test_a_cursor_decodes_to_the_stored_values_of_its_order() -> None:
    order = (("seen_at", True), ("active", False), ("id", True))
    row = {"id": 4, "seen_at": DAY, "active": True, "label": "x"}
    cursor = encode_cursor(row, order, ITEMS)
    assert "=" not in cursor
    assert decode_cursor(cursor, 3) == [DAY.isoformat(), 1, 4]


def test_a_cursor_condition_means_strictly_after_in_the_order() -> None:
    cond = cursor_condition(
        (("size", True), ("id", False)), encode_cursor({"id": 3, "size": 2}, (("size", True), ("id", False)), ITEMS)
    )
    assert cond.sql == '("size" < ?) OR ("size" = ? AND "id" > ?)'
    assert cond.params == (2, 2, 3)


@pytest.mark.parametrize(
    "order", [(("id", False),), (("id", True),), (("size", False), ("id", False)), (("size", True), ("id", True))]
)
def test_paging_with_cursors_visits_every_row_once_in_order(
    tx: Transaction, order: tuple[tuple[str, bool], ...]
) -> None:
    expected = _labels(tx, order=order)
    seen: list[str] = []
    cursor: str | None = None
    while True:
        extra = (cursor_condition(order, cursor),) if cursor else ()
        page = tx.select(Select(ITEMS, extra, order=order, limit=2))
        seen += [r["label"] for r in page]
        if len(page) < 2:
            break
        cursor = encode_cursor(page[-1], order, ITEMS)
    assert seen == expected and len(seen) == 7


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "!!!",
        "not base64 at all",
        "é",
        _cursor_of({"id": 1}),
        _cursor_of("x"),
        _cursor_of([1]),
        _cursor_of([1, 2, 3]),
        _cursor_of([[1], 2]),
        _cursor_of([{"a": 1}, 2]),
        _cursor_of([2**63, 1]),
        _cursor_of([1, 2**64 - 1]),
        base64.urlsafe_b64encode(b"[1, 2").decode(),
    ],
)
def test_an_invalid_cursor_is_a_validation_error(cursor: str) -> None:
    with pytest.raises(ValidationFailed) as raised:
        cursor_condition((("size", False), ("id", False)), cursor)
    assert raised.value.code == "ValidationFailed"
    assert [d["field"] for d in raised.value.details] == ["cursor"]


def test_a_well_formed_cursor_with_nulls_and_floats_is_accepted() -> None:
    assert decode_cursor(_cursor_of([None, 1.5, "x", 2**63 - 1]), 4) == [None, 1.5, "x", 2**63 - 1]
