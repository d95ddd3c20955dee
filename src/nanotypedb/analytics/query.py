"""What `getAnalytics` asks (a time range, a bucket, dimensions) and the series it answers, from minute rows."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from ..errors import ValidationFailed
from ..storage.analytics import CallRow, ChangeRow
from .aggregator import MINUTE
from .histogram import quantile

CALL_DIMENSIONS = ("function", "caller", "status")
CHANGE_DIMENSIONS = ("table", "action")
UNITS = {"m": 60, "h": 3600, "d": 86400}
MAX_POINTS = 10_000  # buckets per series: (to - from) / bucket
Row = TypeVar("Row", CallRow, ChangeRow)
DEFAULT_SPAN = 86400  # seconds before `to` when `from` is not given
LAST_TIME = 253402300799  # 9999-12-31T23:59:59Z, the last time an ISO-8601 date can write


@dataclass(frozen=True, slots=True)
class Request:
    """A validated request: [start, end) in Unix seconds (start on a minute), bucket seconds, dimensions."""

    start: int
    end: int
    bucket: str
    seconds: int
    group_by: tuple[str, ...]

    @property
    def of_calls(self) -> bool:
        """Calls are grouped by function, caller or status; changed rows by table or action."""
        return self.group_by[0] in CALL_DIMENSIONS


def parse(
    start: str | float | None, end: str | float | None, bucket: str, group_by: str | list[str], now: float
) -> Request:
    """Check each argument; a wrong one raises ValidationFailed naming the field, what came and what is expected."""
    to = _time("to", end) if end is not None else now
    since = _time("from", start) if start is not None else to - DEFAULT_SPAN
    if since >= to:
        raise _invalid("from", f"`from` ({_iso(since)}) must be before `to` ({_iso(to)}).")
    seconds = _bucket(bucket)
    if (to - since) / seconds > MAX_POINTS:
        raise _invalid(
            "bucket", f"{bucket!r} makes more than {MAX_POINTS} points from `from` to `to`: ask for a larger bucket."
        )
    first = int(since) // MINUTE * MINUTE  # the minute `from` falls in counts whole
    return Request(first, math.ceil(to), bucket, seconds, _dimensions(group_by))


def _time(name: str, value: str | float) -> float:
    if isinstance(value, int | float):
        if not 0 <= value <= LAST_TIME:  # NaN fails too
            raise _invalid(
                name, f"`{name}` must be Unix seconds between 0 (1970) and {LAST_TIME} (year 9999), not {value!r}."
            )
        return float(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _invalid(
            name, f"`{name}` must be an ISO-8601 time like '2026-12-02T03:00:00Z' or Unix seconds, not {value!r}."
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # a time without an offset is UTC
    return moment.timestamp()


def _bucket(text: str) -> int:
    m = re.fullmatch(r"([1-9][0-9]{0,5})([mhd])", text)
    if m is None:
        raise _invalid(
            "bucket",
            f"`bucket` must be a count of minutes, hours or days like '1m', '15m', '1h' or '1d', not {text!r}.",
        )
    return int(m.group(1)) * UNITS[m.group(2)]


def _dimensions(group_by: str | list[str]) -> tuple[str, ...]:
    dims = (group_by,) if isinstance(group_by, str) else tuple(group_by)
    known = CALL_DIMENSIONS + CHANGE_DIMENSIONS
    unknown = [d for d in dims if d not in known]
    if not dims or unknown:
        raise _invalid("group_by", f"`group_by` takes one or more of {', '.join(known)}; got {list(dims)!r}.")
    if len(set(dims)) != len(dims):
        raise _invalid("group_by", f"`group_by` names a dimension twice: {list(dims)!r}.")
    if not (set(dims) <= set(CALL_DIMENSIONS) or set(dims) <= set(CHANGE_DIMENSIONS)):
        raise _invalid(
            "group_by",
            f"`group_by` mixes calls ({', '.join(CALL_DIMENSIONS)}) with changed rows "
            f"({', '.join(CHANGE_DIMENSIONS)}): ask for each in its own call.",
        )
    return dims


def _invalid(name: str, message: str) -> ValidationFailed:
    return ValidationFailed(
        f"Invalid arguments for 'getAnalytics': {message}",
        details=[{"field": name, "message": message, "type": "analytics_argument"}],
    )


@dataclass(slots=True)
class CallStats:
    """Calls of one series in one bucket (or in the whole range): counts and a latency histogram."""

    count: int = 0
    errors: int = 0
    latency_sum: float = 0.0
    latency_max: float = 0.0
    bins: dict[int, int] = field(default_factory=dict)

    def add(self, status: str, b: int, count: int, total: float, largest: float) -> None:
        self.count += count
        if status != "ok":
            self.errors += count
        self.latency_sum += total
        self.latency_max = max(self.latency_max, largest)
        self.bins[b] = self.bins.get(b, 0) + count

    def to_dict(self) -> dict[str, Any]:
        ms = 1000.0
        return {
            "count": self.count,
            "errors": self.errors,
            "latency_ms": {
                "avg": round(self.latency_sum / self.count * ms, 3) if self.count else 0.0,
                "p50": round(quantile(self.bins, 0.50, self.latency_max) * ms, 3),
                "p95": round(quantile(self.bins, 0.95, self.latency_max) * ms, 3),
                "p99": round(quantile(self.bins, 0.99, self.latency_max) * ms, 3),
                "max": round(self.latency_max * ms, 3),
            },
        }


def within(request: Request, rows: Iterable[Row]) -> list[Row]:
    """The rows of the minutes in [start, end) (the stored rows come already chosen, and bucketed)."""
    return [row for row in rows if request.start <= row[0] < request.end]


def call_series(request: Request, rows: Iterable[CallRow]) -> list[dict[str, Any]]:
    """Series of call stats, one per value of the dimensions, each with its non-empty buckets and a total.
    `rows` are all in the range; their first field is a minute or the start of a bucket."""
    points: dict[tuple[str, ...], dict[int, CallStats]] = {}
    totals: dict[tuple[str, ...], CallStats] = {}
    for minute, function, caller, status, b, count, total, largest in rows:
        values = {"function": function, "caller": caller, "status": status}
        key = tuple(values[d] for d in request.group_by)
        t = minute // request.seconds * request.seconds
        points.setdefault(key, {}).setdefault(t, CallStats()).add(status, b, count, total, largest)
        totals.setdefault(key, CallStats()).add(status, b, count, total, largest)
    return [
        _series(request, key, totals[key].to_dict(), {t: s.to_dict() for t, s in points[key].items()})
        for key in sorted(points)
    ]


def change_series(request: Request, rows: Iterable[ChangeRow]) -> list[dict[str, Any]]:
    """Series of rows changed, one per value of the dimensions (table, action)."""
    points: dict[tuple[str, ...], dict[int, int]] = {}
    for minute, table, action, n in rows:
        values = {"table": table, "action": action}
        series = points.setdefault(tuple(values[d] for d in request.group_by), {})
        t = minute // request.seconds * request.seconds
        series[t] = series.get(t, 0) + n
    return [
        _series(request, key, {"rows": sum(series.values())}, {t: {"rows": n} for t, n in series.items()})
        for key, series in sorted(points.items())
    ]


def _series(
    request: Request, key: tuple[str, ...], total: dict[str, Any], points: dict[int, dict[str, Any]]
) -> dict[str, Any]:
    return {
        "key": dict(zip(request.group_by, key, strict=True)),
        "total": total,
        "points": [{"time": _iso(t), **points[t]} for t in sorted(points)],
    }


def reply(request: Request, series: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "from": _iso(request.start),
        "to": _iso(request.end),
        "bucket": request.bucket,
        "group_by": list(request.group_by),
        "series": series,
    }


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")
