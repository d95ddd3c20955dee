"""The aggregation math of analytics: latency bins and percentiles, per-minute counting, argument parsing, series."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import pytest

from nanotypedb.analytics import query
from nanotypedb.analytics.aggregator import UNKNOWN_FUNCTION, Aggregator
from nanotypedb.analytics.histogram import BOUNDS, bin_of, quantile
from nanotypedb.analytics.recorder import Recorder
from nanotypedb.errors import ValidationFailed
from nanotypedb.storage.analytics import AnalyticsStore
from nanotypedb.storage.engine import Commit
from nanotypedb.storage.transaction import Change

T0 = 1_764_633_600  # 2025-12-02T00:00:00Z, on a day, an hour and a minute


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_bins_double_and_hold_their_upper_bound() -> None:
    assert bin_of(0.0) == 0
    assert bin_of(BOUNDS[0]) == 0
    assert bin_of(BOUNDS[0] * 1.01) == 1
    assert bin_of(BOUNDS[-1] * 10) == len(BOUNDS)
    assert all(b / a == pytest.approx(2) for a, b in itertools.pairwise(BOUNDS))


def test_quantile_interpolates_within_its_bin_and_never_passes_the_largest() -> None:
    assert quantile({}, 0.5, 0.0) == 0.0
    # 100 calls in (0.8 ms, 1.6 ms]: the median lies halfway.
    b = bin_of(0.0012)
    assert quantile({b: 100}, 0.5, 0.0016) == pytest.approx((BOUNDS[b - 1] + BOUNDS[b]) / 2)
    assert quantile({b: 100}, 0.99, 0.0011) == 0.0011  # clamped to the slowest call seen
    slow = len(BOUNDS)
    assert quantile({slow: 1}, 1.0, 60.0) == 60.0  # the open last bin ends at the largest


def test_quantiles_of_a_mix_fall_in_the_right_bins() -> None:
    bins: dict[int, int] = {}
    for seconds, n in ((0.0003, 90), (0.004, 9), (0.5, 1)):
        bins[bin_of(seconds)] = bins.get(bin_of(seconds), 0) + n
    p50, p95, p99 = (quantile(bins, q, 0.5) for q in (0.5, 0.95, 0.99))
    assert bin_of(p50) == bin_of(0.0003)
    assert bin_of(p95) == bin_of(0.004)
    assert bin_of(p99) == bin_of(0.004)  # the 99th of 100 is the last of the nine
    assert quantile(bins, 1.0, 0.5) == 0.5


def test_the_aggregator_counts_per_minute_caller_status_and_bin() -> None:
    clock = Clock(T0 + 59.9)
    agg = Aggregator(lambda name: name != "ghost", clock)
    agg.call("add", "ok", 0.001, "user")
    agg.call("add", "ok", 0.003, "user")
    agg.call("add", "Conflict", 0.001, "user")
    agg.call("ghost", "FunctionNotFound", 0.0001, "anonymous")
    clock.t = T0 + 60
    agg.call("add", "ok", 0.001, "user")
    rows = sorted(agg.take().call_rows())
    assert [(r[0], r[1], r[3], r[5]) for r in rows] == [
        (T0, UNKNOWN_FUNCTION, "FunctionNotFound", 1),
        (T0, "add", "Conflict", 1),
        (T0, "add", "ok", 1),
        (T0, "add", "ok", 1),
        (T0 + 60, "add", "ok", 1),
    ]
    assert not agg.take()  # taken: counting starts again from zero


def test_the_aggregator_keeps_latency_sum_and_max_per_cell() -> None:
    agg = Aggregator(lambda name: True, Clock())
    for seconds in (0.0011, 0.0013, 0.0012):
        agg.call("add", "ok", seconds, "admin")
    ((*_, count, total, largest),) = agg.take().call_rows()
    assert (count, total, largest) == (3, pytest.approx(0.0036), 0.0013)


def test_changed_rows_are_counted_by_table_and_action() -> None:
    agg = Aggregator(lambda name: True, Clock())
    insert = Change("notes", "insert", 1, None, {"id": 1})
    update = Change("notes", "update", 1, {"id": 1}, {"id": 1})
    agg.commit([Commit(1, [insert, update]), Commit(2, [insert]), Commit(3, [], {"external": True})], T0 + 5)
    assert sorted(agg.take().change_rows()) == [(T0, "notes", "insert", 2), (T0, "notes", "update", 1)]


def test_a_restored_batch_adds_to_what_came_since() -> None:
    agg = Aggregator(lambda name: True, Clock())
    agg.call("add", "ok", 0.001, "user")
    failed = agg.take()
    agg.call("add", "ok", 0.001, "user")
    agg.restore(failed)
    assert [r[5] for r in agg.take().call_rows()] == [2]


def test_parse_defaults_to_the_last_day_by_hour_per_function() -> None:
    request = query.parse(None, None, "1h", "function", T0 + 30.5)
    assert (request.start, request.end, request.seconds, request.group_by) == (T0 - 86400, T0 + 31, 3600, ("function",))
    assert request.of_calls


@pytest.mark.parametrize(
    "value", ["2025-12-02T00:00:00Z", "2025-12-02T00:00:00+00:00", "2025-12-02T01:00:00+01:00", "2025-12-02", T0]
)
def test_times_are_iso_8601_or_unix_seconds(value: str | float) -> None:
    assert query.parse(value, T0 + 60, "1m", "status", T0).start == T0


def test_from_rounds_down_to_its_minute() -> None:
    assert query.parse(T0 + 59, T0 + 600, "1m", ["table", "action"], T0).start == T0


@pytest.mark.parametrize(
    ("start", "end", "bucket", "group_by", "field"),
    [
        (None, None, "30s", "function", "bucket"),
        (None, None, "1w", "function", "bucket"),
        (T0, T0 + 86400 * 30, "1m", "function", "bucket"),
        (None, None, "1h", "owner", "group_by"),
        (None, None, "1h", ["caller", "action"], "group_by"),
        ("soon", None, "1h", "function", "from"),
        (None, float("nan"), "1h", "function", "to"),
        (T0, T0, "1h", "function", "from"),
    ],
)
def test_parse_names_the_wrong_field(start: Any, end: Any, bucket: str, group_by: Any, field: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        query.parse(start, end, bucket, group_by, T0)
    assert caught.value.details[0]["field"] == field


def test_call_series_group_by_bucket_and_dimensions() -> None:
    request = query.parse(T0, T0 + 7200, "1h", ["function", "status"], T0)
    rows = [
        (T0, "add", "user", "ok", 5, 3, 0.003, 0.0012),
        (T0 + 60, "add", "admin", "ok", 5, 1, 0.001, 0.001),
        (T0 + 3600, "add", "user", "ok", 5, 2, 0.002, 0.001),
        (T0 + 3600, "add", "user", "Conflict", 5, 1, 0.001, 0.001),
        (T0 + 7200, "add", "user", "ok", 5, 9, 0.009, 0.001),  # `to` is exclusive
    ]
    (conflict, ok) = query.call_series(request, query.within(request, rows))
    assert conflict["key"] == {"function": "add", "status": "Conflict"}
    assert (conflict["total"]["count"], conflict["total"]["errors"]) == (1, 1)
    assert [(p["time"], p["count"]) for p in ok["points"]] == [("2025-12-02T00:00:00Z", 4), ("2025-12-02T01:00:00Z", 2)]
    assert ok["total"]["latency_ms"]["avg"] == pytest.approx(1.0)
    assert ok["total"]["latency_ms"]["max"] == 1.2


def test_change_series_sum_rows() -> None:
    request = query.parse(T0, T0 + 86400, "1d", "table", T0)
    rows = [(T0, "notes", "insert", 3), (T0 + 60, "notes", "delete", 1), (T0, "tags", "insert", 2)]
    assert [(s["key"], s["total"]) for s in query.change_series(request, rows)] == [
        ({"table": "notes"}, {"rows": 4}),
        ({"table": "tags"}, {"rows": 2}),
    ]


def test_the_store_merges_flushes_and_prunes_old_minutes() -> None:
    store = AnalyticsStore(Path(":memory:"))
    store.open()
    store.add([(T0, "add", "user", "ok", 5, 2, 0.002, 0.0011)], [(T0, "notes", "insert", 2)], 0)
    store.add([(T0, "add", "user", "ok", 5, 1, 0.003, 0.003)], [(T0, "notes", "insert", 1)], 0)
    store.add([(T0 + 3600, "add", "user", "ok", 5, 1, 0.001, 0.001)], [], 0)
    assert store.calls(T0, T0 + 7200, 7200) == [(T0, "add", "user", "ok", 5, 4, pytest.approx(0.006), 0.003)]
    assert store.changes(T0, T0 + 60, 60) == [(T0, "notes", "insert", 3)]
    store.prune(T0 + 60)
    assert store.calls(T0, T0 + 7200, 3600) == [(T0 + 3600, "add", "user", "ok", 5, 1, 0.001, 0.001)]
    assert store.changes(0, T0 + 7200, 60) == []
    store.close()


def test_a_read_adds_the_flushed_and_the_pending_counts_once_each() -> None:
    clock = Clock(T0 + 1800.5)  # half past: the hour's bucket starts before `from`
    recorder = Recorder(Path(":memory:"), lambda name: True, flush=3600, retention_days=30, clock=clock)
    recorder.open()

    async def scenario() -> dict[str, Any]:
        for _ in range(3):
            recorder.observe("add", "ok", 0.001, "user")
        await recorder.flush()
        clock.t += 60
        recorder.observe("add", "Conflict", 0.001, "user")
        request = query.parse(T0 + 1800, None, "1h", "function", clock())
        return await recorder.read(request)

    result = asyncio.run(scenario())
    ((series),) = result["series"]
    assert (series["total"]["count"], series["total"]["errors"]) == (4, 1)
    assert [p["time"] for p in series["points"]] == ["2025-12-02T00:00:00Z"]
    recorder.close()
