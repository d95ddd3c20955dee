"""Aggregator: the counts not yet flushed, per minute — a dict increment per call and per changed row.

Not thread-safe on purpose: one thread (the event loop's) feeds it and takes from it, so the hot
path needs no lock (the Recorder hands it commits from other threads through the loop).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from ..storage.analytics import CallRow, ChangeRow
from ..storage.engine import Commit
from .histogram import bin_of

MINUTE = 60  # seconds: the granularity kept in memory and in the file
# Names that are not functions share one series, so that a scanner cannot grow the table without bound.
UNKNOWN_FUNCTION = "_unknown"

CallKey = tuple[int, str, str, str, int]  # minute, function, caller, status, latency bin
ChangeKey = tuple[int, str, str]  # minute, table, action


@dataclass(slots=True)
class Batch:
    """Counts taken from the aggregator to be flushed: [count, latency sum, latency max] per call key."""

    calls: dict[CallKey, list[float]] = field(default_factory=dict)
    changes: dict[ChangeKey, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.calls or self.changes)

    def call_rows(self) -> Iterator[CallRow]:
        for (minute, function, caller, status, b), (count, total, largest) in self.calls.items():
            yield minute, function, caller, status, b, int(count), total, largest

    def change_rows(self) -> Iterator[ChangeRow]:
        for (minute, table, action), rows in self.changes.items():
            yield minute, table, action, rows


class Aggregator:
    """Counts calls (`call`, a Runtime observer) and changed rows (`commit`) into the current Batch."""

    def __init__(self, known: Callable[[str], bool], clock: Callable[[], float]) -> None:
        self.known = known  # is this name a function of the app?
        self.clock = clock
        self.pending = Batch()

    def call(self, function: str, status: str, seconds: float, caller: str) -> None:
        key = (int(self.clock()) // MINUTE * MINUTE, function, caller, status, bin_of(seconds))
        cell = self.pending.calls.get(key)
        if cell is None:
            cell = self._new_cell(key)
        cell[0] += 1
        cell[1] += seconds
        if seconds > cell[2]:
            cell[2] = seconds

    def _new_cell(self, key: CallKey) -> list[float]:
        if not self.known(key[1]):
            key = (key[0], UNKNOWN_FUNCTION, *key[2:])
        return self.pending.calls.setdefault(key, [0, 0.0, 0.0])

    def commit(self, commits: Iterable[Commit], at: float) -> None:
        """Count the rows each commit changed, by table and action, in the minute of `at`."""
        minute = int(at) // MINUTE * MINUTE
        changes = self.pending.changes
        for c in commits:
            for change in c.changes:
                key = (minute, change.table, change.op)
                changes[key] = changes.get(key, 0) + 1

    def take(self) -> Batch:
        """Everything counted since the last take; counting goes on into a new batch."""
        batch, self.pending = self.pending, Batch()
        return batch

    def restore(self, batch: Batch) -> None:
        """Put back a batch whose flush failed, so that the next flush writes it."""
        for key, (count, total, largest) in batch.calls.items():
            cell = self.pending.calls.setdefault(key, [0, 0.0, 0.0])
            cell[0] += count
            cell[1] += total
            cell[2] = max(cell[2], largest)
        for ckey, rows in batch.changes.items():
            self.pending.changes[ckey] = self.pending.changes.get(ckey, 0) + rows
