"""Rows, targets and their two renderings: a table for people and a JSON file for tools."""

from __future__ import annotations

import json
import os
import platform
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _load import Measurement

KEYS = ("scenario", "system", "transport", "durability", "clients")
COLUMNS = (*KEYS, "ops/s", "p50 ms", "p99 ms", "load cpu", "server cpu")


@dataclass(frozen=True)
class Scenario:
    """One operation, over one transport, from a number of concurrent clients."""

    name: str
    transport: str
    clients: int


@dataclass(frozen=True)
class Row:
    """One measurement: a scenario run against a system at a durability, and what came out."""

    system: str
    durability: str
    scenario: Scenario
    result: Measurement

    def key(self) -> tuple[str, str, str, str, int]:
        s = self.scenario
        return (s.name, self.system, s.transport, self.durability, s.clients)

    def cells(self) -> list[str]:
        p50, p99 = self.result.percentile_ms(0.50), self.result.percentile_ms(0.99)
        cpu = [_share(self.result.cpu.get(name)) for name in ("load", "server")]
        return [*map(str, self.key()), f"{self.result.ops_per_s:,.0f}", _ms(p50), _ms(p99), *cpu]

    def to_json(self) -> dict[str, Any]:
        r = self.result
        return {
            **dict(zip(KEYS, self.key(), strict=True)),
            "ops": r.ops,
            "seconds": r.seconds,
            "ops_per_s": round(r.ops_per_s, 1),
            "p50_ms": _round(r.percentile_ms(0.50)),
            "p99_ms": _round(r.percentile_ms(0.99)),
            "cpu_share_of_one_core": r.cpu,
            "errors": r.errors,
            "first_error": r.first_error,
        }


@dataclass(frozen=True)
class Target:
    """A figure the issue asks for, as a value compared with a threshold (higher is better)."""

    name: str
    description: str
    value: float | None
    threshold: float
    unit: str

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "n/a"
        return "PASS" if self.value >= self.threshold else "FAIL"

    def cells(self) -> list[str]:
        return [self.description, _fmt(self.value, self.unit), _fmt(self.threshold, self.unit)]

    def to_json(self) -> dict[str, Any]:
        value = None if self.value is None else round(self.value, 3)
        return {
            "name": self.name,
            "description": self.description,
            "value": value,
            "threshold": self.threshold,
            "unit": self.unit,
            "verdict": self.verdict,
        }


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:.2f}x" if unit == "ratio" else f"{value:,.0f}/s"


def table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    """Left-aligned text columns, numbers right-aligned."""
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  ".join("-" * w for w in widths))
    out += ["  ".join(_align(c, w) for c, w in zip(row, widths, strict=True)) for row in lines]
    return "\n".join(out)


def _align(cell: str, width: int) -> str:
    numeric = cell[:1].isdigit() or cell in ("-", "n/a")
    return cell.rjust(width) if numeric else cell.ljust(width)


def render(rows: Sequence[Row], targets: Sequence[Target]) -> str:
    parts = [table(COLUMNS, [row.cells() for row in rows]), ""]
    lines = [[*t.cells(), t.verdict] for t in targets]
    parts.append(table(("target", "measured", "needed", "verdict"), lines))
    for row in rows:
        if row.result.errors:
            parts.append(f"! {row.result.errors} errors in {' / '.join(map(str, row.key()))}: {row.result.first_error}")
    return "\n".join(parts)


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def save(path: Path, document: dict[str, Any]) -> None:
    """Write atomically (a *.tmp file, then rename) so a killed run leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)


def write_json(path: Path, rows: Sequence[Row], targets: Sequence[Target], extra: dict[str, Any]) -> None:
    document = {
        "benchmark": "rpc",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        **extra,
        "results": [row.to_json() for row in rows],
        "targets": [t.to_json() for t in targets],
    }
    save(path, document)
