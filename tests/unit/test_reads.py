"""Read sets: which changed rows can alter what a query read."""

from __future__ import annotations

import datetime as dt

from nanotypedb.storage.reads import ReadSet


def test_equality_filters_narrow_what_touches() -> None:
    reads = ReadSet()
    reads.add("tasks", {"owner_id": "alice", "status": "pending"})
    assert reads.touches("tasks", {"owner_id": "alice", "status": "pending", "title": "x"})
    assert not reads.touches("tasks", {"owner_id": "bob", "status": "pending"})
    assert not reads.touches("tasks", {"owner_id": "alice", "status": "completed"})
    assert not reads.touches("notes", {"owner_id": "alice", "status": "pending"})


def test_a_null_filter_matches_only_null() -> None:
    reads = ReadSet()
    reads.add("tasks", {"owner_id": None})
    assert reads.touches("tasks", {"owner_id": None})
    assert not reads.touches("tasks", {"owner_id": "alice"})


def test_values_it_cannot_compare_count_as_a_match() -> None:
    when = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    reads = ReadSet()
    reads.add("tasks", {"created_at": when.isoformat()})
    assert reads.touches("tasks", {"created_at": when})  # str filter, datetime row: never miss


def test_an_unfiltered_read_is_touched_by_any_row_of_its_table() -> None:
    reads = ReadSet()
    reads.add("tasks")
    assert reads.touches("tasks", {"id": 1}) and reads.touches("tasks", None)
