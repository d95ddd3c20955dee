"""VectorIndex against a brute-force reference on random float32 data: top k, writes, thresholds and `accept`."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from nanotypedb.errors import ValidationFailed
from nanotypedb.vectors import VectorIndex
from nanotypedb.vectors.index import MAX_BATCH
from nanotypedb.vectors.table import BLOCK_ROWS, TableVectors

DIMS = 24


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def reference(rows: dict[int, npt.NDArray[np.float32]], query: npt.NDArray[np.float32]) -> list[tuple[int, float]]:
    """Every row by cosine similarity, best first, computed the slow and obvious way (float64)."""
    q = query.astype(np.float64) / np.linalg.norm(query.astype(np.float64))
    scored = [(i, float(v.astype(np.float64) @ q / np.linalg.norm(v.astype(np.float64)))) for i, v in rows.items()]
    return sorted(scored, key=lambda pair: -pair[1])


def filled(n: int, seed: int = 0) -> tuple[VectorIndex, dict[int, npt.NDArray[np.float32]]]:
    index = VectorIndex()
    rows = {i * 3 + 1: v for i, v in enumerate(rng(seed).standard_normal((n, DIMS), dtype=np.float32))}
    for row_id, vector in rows.items():
        index.upsert("docs", row_id, vector)
    return index, rows


def assert_same(found: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [i for i, _ in found] == [i for i, _ in expected]
    np.testing.assert_allclose([s for _, s in found], [s for _, s in expected], atol=1e-5)


def test_search_returns_the_k_most_similar_rows_best_first() -> None:
    index, rows = filled(500)
    for query in rng(1).standard_normal((20, DIMS), dtype=np.float32):
        assert_same(index.search("docs", query, 10), reference(rows, query)[:10])


def test_scores_stay_float32_and_match_cosine() -> None:
    index, _ = filled(50)
    query = rng(2).standard_normal(DIMS, dtype=np.float32)
    table = index._tables["docs"]
    assert all(block.dtype == np.float32 for block in table.blocks)
    assert table.scores(np.ones(DIMS, dtype=np.float32)).dtype == np.float32
    best_id, best_score = index.search("docs", query, 1)[0]
    assert index.score("docs", best_id, query) == pytest.approx(best_score, abs=1e-6)


def test_k_larger_than_the_table_returns_every_row_in_order() -> None:
    index, rows = filled(7)
    query = rng(3).standard_normal(DIMS, dtype=np.float32)
    assert_same(index.search("docs", query, 100), reference(rows, query))


def test_an_empty_or_unknown_table_finds_nothing() -> None:
    index = VectorIndex()
    query = np.ones(DIMS, dtype=np.float32)
    assert index.search("nothing", query, 5) == []
    index.upsert("docs", 1, query)
    index.remove("docs", 1)
    assert index.search("docs", query, 5) == []
    assert index.match("docs", query, 0.0) == []
    assert index.count("docs") == 0


def test_upsert_replaces_and_remove_forgets() -> None:
    index, rows = filled(200)
    fresh = rng(4).standard_normal((60, DIMS), dtype=np.float32)
    for row_id, vector in zip(list(rows)[:60], fresh, strict=True):
        index.upsert("docs", row_id, vector)
        rows[row_id] = vector
    for row_id in list(rows)[60:140]:
        assert index.remove("docs", row_id)
        del rows[row_id]
    assert not index.remove("docs", 999_999)
    assert index.count("docs") == len(rows) == 120
    for query in rng(5).standard_normal((10, DIMS), dtype=np.float32):
        assert_same(index.search("docs", query, 15), reference(rows, query)[:15])


def test_removing_then_adding_again_finds_the_new_vector() -> None:
    index, rows = filled(30)
    target = list(rows)[3]
    index.remove("docs", target)
    query = rng(6).standard_normal(DIMS, dtype=np.float32)
    assert target not in [i for i, _ in index.search("docs", query, 30)]
    index.upsert("docs", target, query * 5)
    assert index.search("docs", query, 1)[0] == (target, pytest.approx(1.0, abs=1e-6))


def test_growing_adds_a_block_and_never_copies_the_rows_already_there() -> None:
    table = TableVectors(4)
    table.upsert(0, np.ones(4, dtype=np.float32))
    first = table.blocks[0]
    for i in range(1, BLOCK_ROWS * 2 + 5):
        table.upsert(i, np.full(4, i, dtype=np.float32))
    assert len(table.blocks) == 3 and table.blocks[0] is first
    table.remove(7)
    table.upsert(7, np.ones(4, dtype=np.float32))  # a removal and a re-insert reuse the slot
    assert len(table.blocks) == 3 and table.size == BLOCK_ROWS * 2 + 5


def test_a_loaded_matrix_is_used_in_place_and_its_short_end_replaced_when_full() -> None:
    n = BLOCK_ROWS + 10
    loaded = rng(10).standard_normal((n, 4), dtype=np.float32)
    table = TableVectors.from_arrays(np.arange(n, dtype=np.int64), loaded)
    assert all(np.shares_memory(block, loaded) for block in table.blocks)
    np.testing.assert_allclose(np.linalg.norm(table.row(5)), 1.0, rtol=1e-6)
    for i in range(n, n + BLOCK_ROWS):  # fills the short block, then starts another
        table.upsert(i, np.ones(4, dtype=np.float32))
    assert np.shares_memory(table.blocks[0], loaded) and not np.shares_memory(table.blocks[1], loaded)
    assert len(table.blocks) == 3
    assert table.slots[n - 1] == n - 1 and np.allclose(table.row(n - 1), loaded[n - 1])


def test_search_spans_blocks_and_swap_removes_across_them() -> None:
    index, rows = filled(BLOCK_ROWS + 300, seed=11)
    for row_id in list(rows)[:200]:  # slots in the first block get rows moved from the second
        index.remove("docs", row_id)
        del rows[row_id]
    for query in rng(12).standard_normal((5, DIMS), dtype=np.float32):
        assert_same(index.search("docs", query, 20), reference(rows, query)[:20])


def test_accept_only_returns_accepted_ids_and_still_k_of_them() -> None:
    index, rows = filled(2000)
    allowed = {i for i in rows if i % 7 == 0}
    calls: list[int] = []

    def accept(ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        calls.append(len(ids))
        return np.array([i for i in ids.tolist() if i in allowed], dtype=np.int64)

    query = rng(7).standard_normal(DIMS, dtype=np.float32)
    expected = [pair for pair in reference(rows, query) if pair[0] in allowed][:10]
    assert_same(index.search("docs", query, 10, accept), expected)
    assert calls[0] == 40  # k x 4 first


def test_a_user_with_few_visible_rows_still_gets_all_of_them() -> None:
    index, rows = filled(3000)
    few = set(list(rows)[-3:])  # three rows, likely far down the ranking
    query = rng(8).standard_normal(DIMS, dtype=np.float32)
    found = index.search("docs", query, 10, lambda ids: ids[np.isin(ids, list(few))])
    assert sorted(i for i, _ in found) == sorted(few)
    assert [i for i, _ in found] == [i for i, _ in reference(rows, query) if i in few]


def test_batches_grow_until_the_candidates_run_out_and_never_repeat() -> None:
    index, rows = filled(MAX_BATCH * 3)
    seen: list[int] = []
    sizes: list[int] = []

    def nobody(ids: npt.NDArray[np.int64]) -> list[int]:
        seen.extend(ids.tolist())
        sizes.append(len(ids))
        return []

    assert index.search("docs", np.ones(DIMS, dtype=np.float32), 5, nobody) == []
    assert sorted(seen) == sorted(rows)  # every candidate exactly once
    assert sizes[:4] == [20, 80, 320, 1280] and max(sizes) == MAX_BATCH


def test_ids_accept_returns_that_it_was_not_given_are_ignored() -> None:
    index, rows = filled(100)
    first: list[int] = []

    def strange(ids: npt.NDArray[np.int64]) -> list[int]:
        if not first:
            first.append(int(ids[0]))
        return [*first, -5, 10**9]  # ids never offered, and the first one again in every batch

    found = index.search("docs", np.ones(DIMS, dtype=np.float32), 3, strange)
    assert [i for i, _ in found] == first and first[0] in rows


def test_match_returns_every_row_above_the_threshold_best_first() -> None:
    index, rows = filled(400)
    query = rng(9).standard_normal(DIMS, dtype=np.float32)
    expected = [pair for pair in reference(rows, query) if pair[1] >= 0.3]
    assert expected  # the threshold selects some, not all
    assert_same(index.match("docs", query, 0.3), expected)


def test_score_of_a_row_without_a_vector_is_a_key_error() -> None:
    index, _ = filled(3)
    with pytest.raises(KeyError):
        index.score("docs", 2, np.ones(DIMS, dtype=np.float32))


@pytest.mark.parametrize(
    "query",
    [np.ones(DIMS + 1, dtype=np.float32), np.full(DIMS, np.nan, dtype=np.float32), np.ones((2, DIMS)), []],
    ids=["wrong size", "nan", "2-d", "empty"],
)
def test_a_bad_query_is_refused(query: Any) -> None:
    index, _ = filled(3)
    with pytest.raises(ValidationFailed):
        index.search("docs", query, 1)


def test_k_below_one_and_vectors_of_another_size_are_refused() -> None:
    index, _ = filled(3)
    with pytest.raises(ValidationFailed):
        index.search("docs", np.ones(DIMS, dtype=np.float32), 0)
    with pytest.raises(ValidationFailed):
        index.upsert("docs", 99, np.ones(DIMS + 1, dtype=np.float32))


def test_an_emptied_table_takes_the_size_of_its_next_vector() -> None:
    index = VectorIndex()
    index.upsert("docs", 1, np.ones(3, dtype=np.float32))
    index.remove("docs", 1)
    index.upsert("docs", 1, np.ones(5, dtype=np.float32))  # a new model with another size
    assert index.dims("docs") == 5


def test_a_zero_vector_is_kept_and_matches_nothing() -> None:
    index = VectorIndex()
    index.upsert("docs", 1, np.zeros(4, dtype=np.float32))
    index.upsert("docs", 2, np.ones(4, dtype=np.float32))
    assert index.search("docs", np.ones(4, dtype=np.float32), 2) == [(2, pytest.approx(1.0)), (1, 0.0)]


def test_a_k_beyond_one_batch_still_gets_k_accepted_rows() -> None:
    index, rows = filled(12_000, seed=13)
    query = rng(14).standard_normal(DIMS, dtype=np.float32)
    found = index.search("docs", query, 3000, lambda ids: ids[ids % 2 == 0])
    expected = [pair for pair in reference(rows, query) if pair[0] % 2 == 0][:3000]
    assert_same(found, expected)


def test_a_caller_who_sees_few_rows_costs_few_passes_over_the_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    from nanotypedb.vectors import index as module

    index, rows = filled(20_000, seed=15)
    passes: list[int] = []
    top = module._top
    monkeypatch.setattr(module, "_top", lambda scores, k: passes.append(k) or top(scores, k))
    visible = list(rows)[::100]  # 1 %
    found = index.search(
        "docs", rng(16).standard_normal(DIMS, dtype=np.float32), 10, lambda ids: ids[np.isin(ids, visible)]
    )
    assert len(found) == 10
    assert passes == [40, MAX_BATCH]  # the first batch, then one pool served the rest
