"""ReadIndex: a write finds the live queries it may alter without looking at every one."""

from __future__ import annotations

import datetime as dt

from nanotypedb.live.index import ReadIndex
from nanotypedb.storage.reads import ReadSet


def reads(table: str, **filters: object) -> ReadSet:
    read_set = ReadSet()
    read_set.add(table, filters)
    return read_set


def test_a_row_finds_only_the_reads_filed_under_its_value() -> None:
    index = ReadIndex()
    for user in ("alice", "bob", "carol"):
        index.put(user, reads("tasks", owner_id=user))
    assert index.candidates("tasks", [{"owner_id": "bob"}]) == {"bob"}
    assert index.candidates("tasks", [{"owner_id": "alice"}, {"owner_id": "carol"}]) == {"alice", "carol"}
    assert index.candidates("tasks", [{"owner_id": "dave"}]) == set()
    assert index.candidates("notes", [{"owner_id": "bob"}]) == set()


def test_a_read_with_no_filter_is_a_candidate_for_every_row() -> None:
    index = ReadIndex()
    index.put("all", reads("tasks"))
    index.put("alice", reads("tasks", owner_id="alice"))
    assert index.candidates("tasks", [{"owner_id": "bob"}]) == {"all"}


def test_values_of_other_types_stay_candidates_as_read_sets_assume() -> None:
    index = ReadIndex()
    index.put("int", reads("tasks", owner_id=5))
    index.put("null", reads("tasks", owner_id=None))
    index.put("flag", reads("tasks", owner_id=True))  # not filed by value: bool is not an int here
    assert index.candidates("tasks", [{"owner_id": "5"}]) == {"int", "flag"}
    assert index.candidates("tasks", [{"owner_id": None}]) == {"null", "flag"}
    assert index.candidates("tasks", [{"owner_id": dt.date(2026, 1, 1)}]) == {"int", "flag"}


def test_refiling_and_removing_leave_nothing_behind() -> None:
    index = ReadIndex()
    index.put("q", reads("tasks", owner_id="alice"))
    index.put("q", reads("notes", owner_id="bob"))
    assert index.candidates("tasks", [{"owner_id": "alice"}]) == set()
    assert index.candidates("notes", [{"owner_id": "bob"}]) == {"q"}
    index.remove("q")
    assert index.empty
    assert len(index) == 0
