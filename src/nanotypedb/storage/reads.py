"""ReadSet: what a query read — the tables, and the equality filters it used on each."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class TableRead:
    """One read of a table: `filters` are the column = value conditions that bound it (empty: any row)."""

    table: str
    filters: tuple[tuple[str, Any], ...] = ()


@dataclass(slots=True)
class ReadSet:
    """Every read of one query; live queries re-run when a commit touches one of them."""

    reads: list[TableRead] = field(default_factory=list)

    def add(self, table: str, filters: dict[str, Any] | None = None) -> None:
        items = tuple(sorted((filters or {}).items()))
        read = TableRead(table, items)
        if read not in self.reads:
            self.reads.append(read)

    @property
    def tables(self) -> set[str]:
        return {r.table for r in self.reads}

    def touches(self, table: str, row: dict[str, Any] | None) -> bool:
        """Whether a change to `row` (before or after image) of `table` can alter what was read."""
        for read in self.reads:
            if read.table != table:
                continue
            if row is None or all(_may_equal(row.get(col), val) for col, val in read.filters):
                return True
        return False


def _may_equal(have: Any, want: Any) -> bool:
    """Equal, or of different types and so not comparable here (an ISO string and a datetime,
    say): a read set must never miss a change that could matter, so it assumes a match."""
    if have is None or want is None:
        return have is want  # NULL matches only NULL: `x = None` reads compile to IS NULL
    return have == want or type(have) is not type(want)
