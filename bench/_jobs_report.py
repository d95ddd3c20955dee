"""The lines and targets of bench/jobs.py, and their two renderings: a table and a JSON document."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from _report import _ms, _round, machine, save, table

COLUMNS = ("measurement", "case", "n", "p50 ms", "p99 ms", "rate", "seconds", "note")
NUMERIC = frozenset(range(2, 7))


@dataclass(frozen=True)
class Line:
    """One figure: latencies of repeated operations, a rate, a duration, or None where not measured."""

    measurement: str
    case: str
    count: int | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    per_s: float | None = None
    seconds: float | None = None
    note: str = ""

    def cells(self) -> list[str]:
        count = "-" if self.count is None else f"{self.count:,}"
        rate = "-" if self.per_s is None else f"{self.per_s:,.0f}/s"
        seconds = "-" if self.seconds is None else f"{self.seconds:.2f}"
        return [self.measurement, self.case, count, _ms(self.p50_ms), _ms(self.p99_ms), rate, seconds, self.note]

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for key in ("p50_ms", "p99_ms", "per_s", "seconds"):
            doc[key] = _round(doc[key])
        return doc


def timed(measurement: str, case: str, latencies_s: Sequence[float], note: str = "") -> Line:
    """A line from per-operation latencies in seconds: p50, p99 and operations per second of busy time."""
    ms = np.asarray(latencies_s) * 1000
    p50, p99 = (float(v) for v in np.percentile(ms, [50, 99]))
    return Line(measurement, case, len(ms), p50, p99, per_s=len(ms) / float(np.sum(latencies_s)), note=note)


def not_measured(measurement: str, case: str) -> Line:
    return Line(measurement, case, note="not measured yet")


@dataclass(frozen=True)
class Target:
    """A figure the issue asks for, against its threshold; `lower` says smaller is better (a latency)."""

    description: str
    value: float | None
    threshold: float
    unit: str
    lower: bool = False

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        met = self.value <= self.threshold if self.lower else self.value >= self.threshold
        return "PASS" if met else "FAIL"

    def cells(self) -> list[str]:
        sign = "<=" if self.lower else ">="
        return [
            self.description,
            _fmt(self.value, self.unit),
            f"{sign} {_fmt(self.threshold, self.unit)}",
            self.verdict,
        ]

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "value": _round(self.value), "verdict": self.verdict}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f} ms" if unit == "ms" else f"{value:,.0f}/s"


def lines_table(lines: Sequence[Line]) -> str:
    """Like _report.table, but aligned by column: a case such as "10,000 x 384" starts with a digit and is text."""
    rows = [list(COLUMNS), *(line.cells() for line in lines)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(_cell(c, w, i, header=n == 0) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in out)


def _cell(text: str, width: int, column: int, header: bool) -> str:
    return text.rjust(width) if column in NUMERIC and not header else text.ljust(width)


def render(lines: Sequence[Line], targets: Sequence[Target], failures: Sequence[str]) -> str:
    parts = [lines_table(lines), ""]
    parts.append(table(("target", "measured", "needed", "verdict"), [t.cells() for t in targets]))
    parts += [f"! {failure}" for failure in failures]
    return "\n".join(parts)


def write_json(
    path: Path,
    lines: Sequence[Line],
    targets: Sequence[Target],
    failures: Sequence[str],
    settings: dict[str, Any],
    notes: dict[str, Any],
) -> None:
    save(
        path,
        {
            "benchmark": "jobs",
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {**machine(), "numpy": np.__version__},
            "settings": settings,
            "notes": notes,
            "results": [line.to_json() for line in lines],
            "targets": [t.to_json() for t in targets],
            "failures": list(failures),
        },
    )
