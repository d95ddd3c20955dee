"""The optimistic algorithm against the shared vectors of tests/fixtures/optimistic_cases.json (the browser client
runs the same file)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nanotypedb.client import optimistic

CASES_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "optimistic_cases.json"
CASES: list[dict[str, Any]] = json.loads(CASES_FILE.read_text(encoding="utf-8"))["cases"]


def run(case: dict[str, Any]) -> Any:
    mutation = case["mutation"]
    spec, args = mutation["spec"], mutation["args"]
    row = None
    if spec["kind"] == "insert":
        row = mutation.get("result") or optimistic.insert_row(spec, args, mutation["temp_id"], mutation["user_id"])
    return optimistic.apply(case["data"], case["reads"], case["args_of_subscription"], spec, args, row)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector(case: dict[str, Any]) -> None:
    before = json.dumps(case)
    assert optimistic.same(run(case), case["expected"]), f"got {run(case)!r}"
    assert json.dumps(case) == before, "the inputs must not be modified"


def test_the_vectors_cover_every_kind_of_read_and_mutation() -> None:
    kinds = {(c["mutation"]["spec"]["kind"], r["kind"]) for c in CASES for r in c["reads"][:1]}
    assert {("insert", "rows"), ("insert", "count"), ("insert", "get")} <= kinds
    assert {("update", "rows"), ("update", "get"), ("delete", "rows"), ("delete", "get")} <= kinds


def test_temporary_ids_sort_after_real_ids_and_by_number() -> None:
    assert optimistic.compare_ids("optimistic:1", 10**12) == 1
    assert optimistic.compare_ids(3, "optimistic:2") == -1
    assert optimistic.compare_ids("optimistic:10", "optimistic:9") == 1


def test_values_compare_as_sqlite_orders_them() -> None:
    assert optimistic.compare(None, -5) == -1
    assert optimistic.compare(10, 9.5) == 1
    assert optimistic.compare(10, "1") == -1
    assert optimistic.compare("b", "a") == 1


def test_equality_is_json_equality() -> None:
    assert optimistic.same(1, 1.0)
    assert not optimistic.same(True, 1)
    assert not optimistic.same([1], [1, 2])
    assert optimistic.same({"a": [1, {"b": None}]}, {"a": [1, {"b": None}]})
