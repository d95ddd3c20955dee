"""QueryCache: a query's encoded result, kept until a commit touches what it read.

Like Convex's query cache: a query's result depends only on its arguments, its caller and
the data it read, so the same call gets the same bytes until a commit changes a row its
read set covers. Entries are keyed by function, arguments and the caller's identity and
claims, so one caller's results never reach another.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import orjson

from ..auth.principal import Principal
from ..storage.engine import Commit
from ..storage.reads import ReadSet

# Claims that change with each token of the same user and cannot change a query's result.
_VOLATILE_CLAIMS = frozenset({"exp", "iat", "nbf", "jti"})

Key = tuple[str, bytes, str, str | None, bytes]


@dataclass(frozen=True, slots=True)
class Entry:
    data: object
    encoded: bytes
    read_set: ReadSet


def key(name: str, args: bytes, principal: Principal) -> Key:
    claims = {k: v for k, v in principal.claims.items() if k not in _VOLATILE_CLAIMS}
    return (name, args, principal.kind.value, principal.id, orjson.dumps(claims, option=orjson.OPT_SORT_KEYS))


class QueryCache:
    """At most `capacity` results, least recently used first out; `capacity` 0 turns it off."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Key, Entry] = OrderedDict()
        self._by_table: dict[str, set[Key]] = {}
        # Commits from write_sync arrive on other threads than the event loop's.
        self._lock = threading.Lock()

    def get(self, k: Key) -> Entry | None:
        with self._lock:
            entry = self._entries.get(k)
            if entry is None:
                self.misses += 1
                return None
            self._entries.move_to_end(k)
            self.hits += 1
            return entry

    def put(self, k: Key, entry: Entry, version: int, current: int) -> None:
        """Keep a result computed at `version`, unless a commit came since (it may be stale)."""
        if self.capacity <= 0 or version != current:
            return
        with self._lock:
            self._entries[k] = entry
            for table in entry.read_set.tables:
                self._by_table.setdefault(table, set()).add(k)
            while len(self._entries) > self.capacity:
                self._forget(next(iter(self._entries)))

    def invalidate(self, commits: list[Commit]) -> None:
        """The commit listener: drop every result whose read set a changed row touches."""
        with self._lock:
            for commit in commits:
                if commit.info.get("external"):  # another process wrote: what changed is unknown
                    self._entries.clear()
                    self._by_table.clear()
                    continue
                for change in commit.changes:
                    for k in list(self._by_table.get(change.table, ())):
                        entry = self._entries.get(k)
                        if entry is None:
                            continue
                        if entry.read_set.affected_by(change.table, change.before, change.after):
                            self._forget(k)

    def __len__(self) -> int:
        return len(self._entries)

    def _forget(self, k: Key) -> None:
        entry = self._entries.pop(k, None)
        if entry is None:
            return
        for table in entry.read_set.tables:
            keys = self._by_table.get(table)
            if keys is not None:
                keys.discard(k)
                if not keys:
                    del self._by_table[table]
