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


def test_an_update_counts_only_when_a_column_the_read_depends_on_changed() -> None:
    reads = ReadSet()
    reads.add("tasks", {"owner_id": "alice"}, frozenset({"owner_id", "status"}))  # a count by status
    before = {"id": 1, "owner_id": "alice", "status": "pending", "title": "a"}
    assert not reads.affected_by("tasks", before, {**before, "title": "b"})
    assert reads.affected_by("tasks", before, {**before, "status": "completed"})
    assert reads.affected_by("tasks", None, before)  # an insert changes which rows exist
    assert reads.affected_by("tasks", before, None)  # and so does a delete


def test_an_update_that_changes_nothing_affects_nothing() -> None:
    reads = ReadSet()
    reads.add("tasks")
    row = {"id": 1, "title": "a"}
    assert not reads.affected_by("tasks", row, dict(row))


def test_a_row_moving_into_or_out_of_a_filter_affects_it() -> None:
    reads = ReadSet()
    reads.add("tasks", {"owner_id": "alice"})
    alices, bobs = {"id": 1, "owner_id": "alice"}, {"id": 1, "owner_id": "bob"}
    assert reads.affected_by("tasks", alices, bobs)
    assert reads.affected_by("tasks", bobs, alices)
    assert not reads.affected_by("tasks", bobs, {**bobs, "title": "x"})


def test_a_view_keeps_the_first_read_of_each_table() -> None:
    reads = ReadSet()
    reads.view("tasks", "rows", {"status": "pending"}, ((("id", True)),), 10)
    reads.view("tasks", "count", {})
    assert reads.views == {
        "tasks": {
            "table": "tasks",
            "kind": "rows",
            "filters": {"status": "pending"},
            "order": [["id", "desc"]],
            "limit": 10,
        }
    }
