"""Row-level security for vector search: an `accept` filter that asks `ctx.db` which candidates the caller may read.

The filter holds no rule of its own: it runs `db.query(table).filter("id", "in", ids)`,
which applies the table's read policy (SQL conditions and any predicate) like every
other read, so search can never show a row a plain query would hide.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from .store import IdArray

# SQLite >= 3.32 binds up to 32,766 parameters; the policy's own come on top of these.
MAX_IDS_PER_QUERY = 8192


class RowQuery(Protocol):
    def filter(self, column: str, op: str, value: Any) -> RowQuery: ...

    def all(self) -> list[dict[str, Any]]: ...


class Readable(Protocol):
    """What `accept_visible` needs of `ctx.db` (`functions.db.Db`). A protocol, not an import,
    so that `functions` may import this package to offer search without a cycle."""

    def query(self, table: str) -> RowQuery: ...


class VisibleRows:
    """An `accept` for `VectorIndex.search`: one SQL query per batch of candidates, under the caller's policy.

    It keeps the rows it read, so the caller can answer with them without reading them again.
    """

    def __init__(self, db: Readable, table: str) -> None:
        self.db = db
        self.table = table
        self.rows: dict[int, dict[str, Any]] = {}

    def __call__(self, ids: IdArray) -> IdArray:
        wanted = ids.tolist()
        accepted: list[int] = []
        for start in range(0, len(wanted), MAX_IDS_PER_QUERY):
            for row in self.db.query(self.table).filter("id", "in", wanted[start : start + MAX_IDS_PER_QUERY]).all():
                self.rows[row["id"]] = row
                accepted.append(row["id"])
        return np.asarray(accepted, dtype=np.int64)

    def rows_for(self, ids: list[int]) -> list[Mapping[str, Any]]:
        """The rows read for `ids`, in that order (the ids a search returned)."""
        return [self.rows[i] for i in ids]


def accept_visible(db: Readable, table: str) -> VisibleRows:
    """The `accept` of a search over `table` as `db`'s caller: `index.search(t, q, k, accept_visible(ctx.db, t))`."""
    return VisibleRows(db, table)
