"""The optimistic-mutation algorithm of docs/live-queries.md: pure functions from a subscription's data to its data
with one pending mutation applied. No I/O; the browser client implements the same rules and passes the same vectors
(tests/fixtures/optimistic_cases.json).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

Row = dict[str, Any]

ID = "id"  # every table's primary key column
TEMP_PREFIX = "optimistic:"
_TEMP_ID = re.compile(r"optimistic:(\d+)\Z")


def temp_id(n: int) -> str:
    """The temporary id of the n-th optimistic insert of a client."""
    return f"{TEMP_PREFIX}{n}"


def insert_row(spec: Mapping[str, Any], args: Mapping[str, Any], temp: str, user_id: str | None) -> Row:
    """An insert's optimistic row: defaults, then the arguments that are columns, then the owner, then the id."""
    columns = set(spec.get("columns") or ())
    row: Row = dict(spec.get("defaults") or {})
    row.update((name, value) for name, value in args.items() if name in columns)
    owner = spec.get("owner")
    if owner is not None and user_id is not None:
        row[owner] = user_id
    row[ID] = temp
    return row


def apply(
    data: Any,
    reads: Sequence[Mapping[str, Any]],
    subscription_args: Mapping[str, Any],
    spec: Mapping[str, Any],
    args: Mapping[str, Any],
    row: Row | None = None,
) -> Any:
    """`data` with one table mutation (`spec`, an insert, update or delete) applied; `row` is an insert's row.

    The inputs are never modified: what changes is copied.
    """
    read = next((r for r in reads if r.get("table") == spec.get("table")), None)
    if read is None:
        return data
    kind, id_arg = spec.get("kind"), spec.get("id") or ID
    if kind == "insert":
        return _insert(data, read, subscription_args, row if row is not None else {})
    if kind not in ("update", "delete") or id_arg not in args:  # without its id the server refuses it anyway
        return data
    if kind == "update":
        return _update(data, read, args[id_arg], _patch(spec, args))
    return _delete(data, args[id_arg])


# ---- insert


def _insert(data: Any, read: Mapping[str, Any], subscription_args: Mapping[str, Any], row: Row) -> Any:
    filters = read.get("filters") or {}
    if read.get("kind") == "count":
        return data + 1 if _is_number(data) and matches(row, filters) else data
    if read.get("kind") != "rows" or not matches(row, filters):
        return data
    if isinstance(data, list):
        return _insert_sorted(data, read, row)
    if isinstance(data, dict) and isinstance(data.get("items"), list) and subscription_args.get("cursor") is None:
        return {**data, "items": _insert_sorted(data["items"], read, row)}
    return data


def _insert_sorted(rows: list[Any], read: Mapping[str, Any], row: Row) -> list[Any]:
    order = [(column, direction) for column, direction in read.get("order") or ()]
    # After every row it ties with: the first row that sorts strictly after the new one.
    at = next((i for i, other in enumerate(rows) if _compare_rows(row, other, order) < 0), len(rows))
    result = [*rows[:at], row, *rows[at:]]
    limit = read.get("limit")
    return result[:limit] if isinstance(limit, int) else result


def _compare_rows(a: Any, b: Any, order: Sequence[tuple[str, str]]) -> int:
    for column, direction in order:
        left = a.get(column) if isinstance(a, dict) else None
        right = b.get(column) if isinstance(b, dict) else None
        result = compare_ids(left, right) if column == ID else compare(left, right)
        if result:
            return -result if direction == "desc" else result
    return 0


def compare(a: Any, b: Any) -> int:
    """SQLite's order of JSON values: null first, then numbers as numbers, then strings by code point."""
    rank_a, rank_b = _rank(a), _rank(b)
    if rank_a != rank_b:
        return -1 if rank_a < rank_b else 1
    if rank_a in (1, 2):
        return (a > b) - (a < b)  # type: ignore[no-any-return]
    return 0


def compare_ids(a: Any, b: Any) -> int:
    """Like `compare`, except that a temporary id is greater than every real id (it will get the next one)."""
    temp_a, temp_b = _temp_number(a), _temp_number(b)
    if temp_a is None and temp_b is None:
        return compare(a, b)
    if temp_a is None or temp_b is None:
        return -1 if temp_a is None else 1
    return (temp_a > temp_b) - (temp_a < temp_b)


def _temp_number(value: Any) -> int | None:
    match = _TEMP_ID.match(value) if isinstance(value, str) else None
    return int(match.group(1)) if match else None


def _rank(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, int | float):  # bool is an int: SQLite stores true and false as 1 and 0
        return 1
    return 2 if isinstance(value, str) else 3


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# ---- update and delete


def _patch(spec: Mapping[str, Any], args: Mapping[str, Any]) -> Row:
    id_arg = spec.get("id") or ID
    columns = set(spec.get("columns") or ())
    patch: Row = dict(spec.get("set") or {})
    patch.update((k, v) for k, v in args.items() if k != id_arg and k in columns and v is not None)
    return patch


def _update(data: Any, read: Mapping[str, Any], row_id: Any, patch: Row) -> Any:
    # Only a list of rows is bounded by the filters; a `get` shows its row whatever it becomes.
    filters = (read.get("filters") or {}) if read.get("kind") == "rows" else None

    def patch_list(rows: list[Any]) -> list[Any]:
        patched = [{**r, **patch} if _has_id(r, row_id) else r for r in rows]
        if filters is None:
            return patched
        return [r for r, old in zip(patched, rows, strict=True) if not _has_id(old, row_id) or matches(r, filters)]

    if isinstance(data, list):
        return patch_list(data)
    if _has_id(data, row_id):
        return {**data, **patch}
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        return {**data, "items": patch_list(data["items"])}
    return data


def _delete(data: Any, row_id: Any) -> Any:
    if isinstance(data, list):
        return [r for r in data if not _has_id(r, row_id)]
    if _has_id(data, row_id):
        return None
    if isinstance(data, dict) and isinstance(data.get("items"), list):
        return {**data, "items": [r for r in data["items"] if not _has_id(r, row_id)]}
    return data


def _has_id(row: Any, row_id: Any) -> bool:
    return isinstance(row, dict) and ID in row and same(row[ID], row_id)


# ---- equality


def matches(row: Mapping[str, Any], filters: Mapping[str, Any]) -> bool:
    """Whether a row meets every `column = value` filter; a column the row lacks counts as a match."""
    return all(column not in row or same(row[column], value) for column, value in filters.items())


def same(a: Any, b: Any) -> bool:
    """JSON equality: `true` is not `1` (as in JavaScript), while `1` and `1.0` are the same number."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list | dict) or isinstance(b, list | dict):
        return False
    return bool(a == b)
