"""Audit and analytics benchmark: what they cost createTask, and a streamed CSV export of 1,000,000 entries.

`make bench` runs it (`python bench/audit.py --help` for its options); it prints a table and
writes bench/results/audit.json. bench/README.md says what each figure and target means.

The configurations (both off, audit only, analytics only, both on) run side by side as
separate servers, measured in turns, so that a noisy spell of the machine falls on all of
them; each figure is the median of its turns.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvloop

from _jobs_queue import admin_key
from _load import measure
from _procs import Server, mint_token, nanotypedb_available, spawn_nanotypedb
from _report import machine, save, table
from live import memory_kib
from rpc import create_over_ws, open_clients

RESULTS = Path(__file__).resolve().parent / "results" / "audit.json"
CLIENTS = 16
EXPORT_ENTRIES = 1_000_000
COST_TARGET = 0.20  # audit and analytics together cost at most this share of createTask ops/s
CONFIGS: dict[str, tuple[str, ...]] = {
    "both off": ("--audit", "off", "--analytics", "off"),
    "audit only": ("--audit", "on", "--analytics", "off"),
    "analytics only": ("--audit", "off", "--analytics", "on"),
    "both on": ("--audit", "on", "--analytics", "on"),
}


@dataclass
class Turns:
    """The ops/s of one configuration's turns."""

    config: str
    durability: str
    ops_per_s: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.ops_per_s) if self.ops_per_s else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "config": self.config,
            "durability": self.durability,
            "clients": CLIENTS,
            "median_ops_per_s": round(self.median, 1),
            "turns_ops_per_s": [round(x, 1) for x in self.ops_per_s],
            "median_p50_ms": round(statistics.median(self.p50_ms), 3) if self.p50_ms else None,
            "errors": self.errors,
            "first_error": self.first_error,
        }


async def throughput(workdir: Path, durability: str, configs: list[str], args: argparse.Namespace) -> list[Turns]:
    """Start one server per configuration, then measure them in turns."""
    servers: dict[str, Server] = {}
    try:
        for config in configs:
            data_dir = workdir / f"{durability}-{config.replace(' ', '-')}"
            servers[config] = spawn_nanotypedb(data_dir, durability, CONFIGS[config])
        for server in servers.values():
            await server.wait_ready()
        tokens = {c: mint_token(workdir / f"{durability}-{c.replace(' ', '-')}") for c in configs}
        turns = {c: Turns(c, durability) for c in configs}
        for turn in range(args.turns):
            order = configs if turn % 2 == 0 else list(reversed(configs))
            for config in order:
                clients = await open_clients(servers[config], "ws", CLIENTS, tokens[config])
                try:
                    result = await measure(clients, create_over_ws, args.warmup, args.duration, {})
                finally:
                    await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
                t = turns[config]
                t.ops_per_s.append(result.ops_per_s)
                t.p50_ms.append(result.percentile_ms(0.5) or 0.0)
                t.errors += result.errors
                t.first_error = t.first_error or result.first_error
                print(f"  {durability} {config} turn {turn + 1}: {result.ops_per_s:,.0f} ops/s", file=sys.stderr)
        return list(turns.values())
    finally:
        for server in servers.values():
            server.stop()


def fill_audit_log(data_dir: Path, entries: int) -> float:
    """Append `entries` chained entries to the dev environment's `_audit`, as the server would; seconds taken."""
    import sqlite3

    from nanotypedb.storage.audit import Act, AuditLog, Origin

    log = AuditLog("dev")
    conn = sqlite3.connect(data_dir / "env" / "dev" / "db.sqlite3", isolation_level=None)
    t0 = time.perf_counter()
    try:
        conn.execute("PRAGMA synchronous=OFF")
        batch = 10_000
        for start in range(0, entries, batch):
            conn.execute("BEGIN IMMEDIATE")
            groups = []
            for i in range(start, min(entries, start + batch)):
                origin = Origin("user", f"user{i % 500}", "createTask", f"req{i:08d}", "127.0.0.1")
                after = {
                    "id": i,
                    "title": f"=SUM(A{i % 90 + 1}) task {i}",
                    "status": "todo",
                    "owner_id": f"user{i % 500}",
                }
                groups.append((origin, [Act("insert", "tasks", i, None, after)]))
            log.append_many(conn, groups)
            conn.execute("COMMIT")
    finally:
        conn.close()
    return time.perf_counter() - t0


async def export(workdir: Path, entries: int) -> dict[str, Any]:
    """Fill the log with `entries`, restart the server, stream GET /api/audit/export as CSV."""
    data_dir = workdir / "export"
    server = spawn_nanotypedb(data_dir, "normal", ("--analytics", "off"))
    try:
        await server.wait_ready()
        key = admin_key(server)
    finally:
        server.stop()
    fill_seconds = fill_audit_log(data_dir, entries)
    server = spawn_nanotypedb(data_dir, "normal", ("--analytics", "off"))
    try:
        await server.wait_ready()
        before = memory_kib(server.process.pid)
        rows, size, cpu0 = 0, 0, server.cpu_seconds()
        t0 = time.perf_counter()
        headers = {"authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(timeout=600) as client:
            url = server.url("http", "/api/audit/export?format=csv")
            async with client.stream("GET", url, headers=headers) as response:
                if response.status_code != 200:
                    raise RuntimeError(f"export answered {response.status_code}: {(await response.aread())[:300]!r}")
                async for chunk in response.aiter_raw():
                    size += len(chunk)
                    rows += chunk.count(b"\n")
        seconds = time.perf_counter() - t0
        after = memory_kib(server.process.pid)
        return {
            "entries": entries,
            "fill_seconds": round(fill_seconds, 1),
            "rows": rows - 1,  # the header line
            "bytes": size,
            "seconds": round(seconds, 2),
            "rows_per_s": round((rows - 1) / seconds, 1),
            "server_cpu_seconds": round(server.cpu_seconds() - cpu0, 2),
            "server_rss_before_mib": round(before["VmRSS"] / 1024, 1),
            "server_peak_rss_mib": round(after["VmHWM"] / 1024, 1),
            "server_peak_growth_mib": round((after["VmHWM"] - before["VmRSS"]) / 1024, 1),
            "export_mib": round(size / 2**20, 1),
        }
    finally:
        server.stop()


def cost(turns: list[Turns], config: str, durability: str) -> float | None:
    by = {(t.config, t.durability): t.median for t in turns}
    base, other = by.get(("both off", durability)), by.get((config, durability))
    return 1 - other / base if base and other is not None else None


def render(turns: list[Turns], found: dict[str, Any], exported: dict[str, Any] | None) -> str:
    rows = [
        [t.durability, t.config, f"{t.median:,.0f}", f"{cost(turns, t.config, t.durability) or 0:+.1%}"] for t in turns
    ]
    parts = [table(("durability", "config", "createTask ops/s (median)", "cost vs both off"), rows), ""]
    if exported:
        parts.append(
            f"CSV export of {exported['rows']:,} entries: {exported['rows_per_s']:,.0f} rows/s, "
            f"{exported['export_mib']} MiB in {exported['seconds']} s; server peak RSS "
            f"{exported['server_peak_rss_mib']} MiB ({exported['server_peak_growth_mib']:+} MiB over its RSS before)"
        )
    for name, goal in found.items():
        value = goal["value"]
        shown = "n/a" if value is None else f"{value:.1%}"
        parts.append(f"{name}: {shown} (target <= {goal['threshold']:.0%}): {goal['verdict']}")
    return "\n".join(parts)


def goals(turns: list[Turns]) -> dict[str, Any]:
    found = {}
    for durability in ("normal", "full"):
        value = cost(turns, "both on", durability)
        if value is None:
            continue
        verdict = "PASS" if value <= COST_TARGET else "FAIL"
        found[f"audit_and_analytics_cost_{durability}"] = {
            "value": round(value, 4),
            "threshold": COST_TARGET,
            "verdict": verdict,
        }
    return found


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured per turn (4)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds discarded before each turn (1)")
    parser.add_argument("--turns", type=int, default=3, help="turns per configuration (3)")
    parser.add_argument("--entries", type=int, default=EXPORT_ENTRIES, help="audit entries exported (1,000,000)")
    parser.add_argument("--no-full", action="store_true", help="skip durability full")
    parser.add_argument("--out", type=Path, default=RESULTS)
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    turns: list[Turns] = []
    failures: list[str] = []
    exported: dict[str, Any] | None = None
    steps: list[tuple[str, Any]] = [("normal", list(CONFIGS))]
    if not args.no_full:
        steps.append(("full", ["both off", "both on"]))
    for durability, configs in steps:
        try:
            turns += await throughput(workdir, durability, configs, args)
        except Exception as exc:
            failures.append(f"throughput ({durability}): {type(exc).__name__}: {exc}"[:2000])
    try:
        exported = await export(workdir, args.entries)
    except Exception as exc:
        failures.append(f"export: {type(exc).__name__}: {exc}"[:2000])
    found = goals(turns)
    print(render(turns, found, exported))
    for failure in failures:
        print(f"! {failure}", file=sys.stderr)
    return {
        "benchmark": "audit",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
        "machine": machine(),
        "settings": {"clients": CLIENTS, "duration_s": args.duration, "warmup_s": args.warmup, "turns": args.turns},
        "throughput": [t.to_json() for t in turns],
        "export": exported,
        "targets": found,
        "failures": failures,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = nanotypedb_available()
    if missing:
        print(f"nanotypedb is not runnable: {missing}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="ntdb-audit-bench-"))
    try:
        document = uvloop.run(run(args, workdir))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    save(args.out, document)
    return 1 if document["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
