"""ReadSet: what a query read — the tables, the equality filters that bounded each read, and the columns it used."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TableRead:
    """One read of a table: `filters` are the column = value conditions that bound it (empty: any row);
    `columns` the columns its result depends on (None: every column)."""

    table: str
    filters: tuple[tuple[str, Any], ...] = ()
    columns: frozenset[str] | None = None


@dataclass(slots=True)
class ReadSet:
    """Every read of one query; live queries re-run when a commit touches one of them.

    `views` describe, per table, the first read in the terms a client can use for
    optimistic updates: its kind, the query's own filters (not row-level security's),
    order and limit.
    """

    reads: list[TableRead] = field(default_factory=list)
    views: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, table: str, filters: Mapping[str, Any] | None = None, columns: frozenset[str] | None = None) -> None:
        read = TableRead(table, tuple(sorted((filters or {}).items())), columns)
        if read not in self.reads:
            self.reads.append(read)

    def view(
        self, table: str, kind: str, filters: Mapping[str, Any], order: Any = (), limit: int | None = None
    ) -> None:
        if table not in self.views:
            self.views[table] = {
                "table": table,
                "kind": kind,
                "filters": dict(filters),
                "order": [[col, "desc" if desc else "asc"] for col, desc in order],
                "limit": limit,
            }

    @property
    def tables(self) -> set[str]:
        return {r.table for r in self.reads}

    def touches(self, table: str, row: dict[str, Any] | None) -> bool:
        """Whether a change to `row` (before or after image) of `table` can alter what was read."""
        for read in self.reads:
            if read.table != table:
                continue
            if row is None or _matches(read, row):
                return True
        return False

    def affected_by(self, table: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> bool:
        """Whether writing `before` → `after` (None: no row) can change this query's result.

        An update counts only when a column the read depends on changed, and when the row
        matched the read's filters before or after it.
        """
        changed: set[str] | None = None
        if before is not None and after is not None:
            changed = {k for k, v in after.items() if before.get(k) != v}
            if not changed:
                return False
        for read in self.reads:
            if read.table != table:
                continue
            if changed is not None and read.columns is not None and changed.isdisjoint(read.columns):
                continue
            if any(row is not None and _matches(read, row) for row in (before, after)):
                return True
        return False


def _matches(read: TableRead, row: dict[str, Any]) -> bool:
    return all(_may_equal(row.get(col), val) for col, val in read.filters)


def _may_equal(have: Any, want: Any) -> bool:
    """Equal, or of different types and so not comparable here (an ISO string and a datetime,
    say): a read set must never miss a change that could matter, so it assumes a match."""
    if have is None or want is None:
        return have is want  # NULL matches only NULL: `x = None` reads compile to IS NULL
    return have == want or type(have) is not type(want)
