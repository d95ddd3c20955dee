"""ReadIndex: live queries by table and by the value of one equality filter, to look only at those a write may alter.

With 10,000 users each subscribed to their own rows, a write by one of them should be
checked against that user's queries, not all 10,000: each read is filed under its first
filter on a string or integer (`owner_id = 'alice'`), and a changed row is looked up by
its own value of that column. The index only narrows; `ReadSet.affected_by` still decides.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Any

from ..storage.reads import ReadSet

_KEYED = (str, int, type(None))
Slot = tuple[str, str | None, Any]  # (table, column or None for "any row", value)


def _keyed(value: Any) -> bool:
    return type(value) in _KEYED  # not isinstance: a bool is not filed as the int it subclasses


class _Column:
    """The reads filed under one column of one table, by the filter's (type, value)."""

    def __init__(self) -> None:
        self.values: dict[tuple[type, Any], set[Hashable]] = {}
        self.by_type: dict[type, set[Hashable]] = {}

    def add(self, member: Hashable, value: Any) -> None:
        self.values.setdefault((type(value), value), set()).add(member)
        self.by_type.setdefault(type(value), set()).add(member)

    def discard(self, member: Hashable, value: Any) -> None:
        key = (type(value), value)
        members = self.values.get(key)
        if members is not None:
            members.discard(member)
            if not members:
                del self.values[key]
        typed = self.by_type.get(type(value))
        if typed is not None:
            typed.discard(member)
            if not typed:
                del self.by_type[type(value)]

    def __bool__(self) -> bool:
        return bool(self.values)

    def candidates(self, have: Any) -> Iterator[Hashable]:
        """Reads a row holding `have` may match: equal values, and (as ReadSet assumes) any of
        another non-null type, which it cannot compare."""
        kind = type(have)
        if have is None:
            yield from self.values.get((kind, None), ())
            return
        if _keyed(have):
            yield from self.values.get((kind, have), ())
        for other, members in self.by_type.items():
            if other is not kind and other is not type(None):
                yield from members


class _Table:
    def __init__(self) -> None:
        self.any: set[Hashable] = set()
        self.columns: dict[str, _Column] = {}


class ReadIndex:
    """Members (live queries) filed by what their read sets read."""

    def __init__(self) -> None:
        self._tables: dict[str, _Table] = {}
        self._slots: dict[Hashable, list[Slot]] = {}

    def put(self, member: Hashable, read_set: ReadSet | None) -> None:
        """File `member` under `read_set` (None: unfile it)."""
        self.remove(member)
        if read_set is None:
            return
        slots = []
        for read in read_set.reads:
            col, value = next(((c, v) for c, v in read.filters if _keyed(v)), (None, None))
            slot = (read.table, col, value)
            if slot in slots:
                continue
            slots.append(slot)
            table = self._tables.setdefault(read.table, _Table())
            if col is None:
                table.any.add(member)
            else:
                table.columns.setdefault(col, _Column()).add(member, value)
        self._slots[member] = slots

    def remove(self, member: Hashable) -> None:
        for table_name, col, value in self._slots.pop(member, ()):
            table = self._tables[table_name]
            if col is None:
                table.any.discard(member)
            else:
                column = table.columns[col]
                column.discard(member, value)
                if not column:
                    del table.columns[col]
            if not table.any and not table.columns:
                del self._tables[table_name]

    def candidates(self, table_name: str, rows: Iterable[dict[str, Any] | None]) -> set[Hashable]:
        """Members whose reads of `table_name` may match one of `rows` (before and after images)."""
        table = self._tables.get(table_name)
        if table is None:
            return set()
        found = set(table.any)
        for row in rows:
            if row is None:
                continue
            for col, column in table.columns.items():
                found.update(column.candidates(row.get(col)))
        return found

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def empty(self) -> bool:
        return not self._tables and not self._slots
