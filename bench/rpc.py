"""RPC benchmark: createTask and listTasks on NanoTypeDB, next to their floors, in one run.

`make bench` runs it (`python bench/rpc.py --help` for its options); it prints a table and
writes bench/results/rpc.json. bench/README.md says what each figure and target means.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from _clients import HttpConnection, WsConnection
from _floor import fsync_loop
from _load import Measurement, Op, measure
from _procs import Server, mint_token, nanotypedb_available, spawn_floor, spawn_nanotypedb
from _report import Row, Target, render, write_json

RESULTS = Path(__file__).resolve().parent / "results" / "rpc.json"
SYNCHRONOUS = {"normal": "NORMAL", "full": "FULL"}
NANOTYPEDB = "nanotypedb"
FSYNC = "1 fsync/mutation"
LIST_LIMIT = 50


@dataclass(frozen=True)
class Scenario:
    """One call, over one transport, from a number of concurrent clients."""

    name: str
    transport: str
    clients: int


CREATE_WS_1 = Scenario("createTask", "ws", 1)
CREATE_HTTP_1 = Scenario("createTask", "http", 1)
CREATE_WS_32 = Scenario("createTask", "ws", 32)
CREATE_HTTP_32 = Scenario("createTask", "http", 32)
LIST_HTTP_16 = Scenario("listTasks", "http", 16)

# Durability -> scenarios. Ordered so that each figure a target compares is measured close in
# time to its reference: the machine is noisy, and neighbours share the same noise.
SERVER_PLAN = {
    "normal": (CREATE_WS_1, CREATE_HTTP_1, CREATE_WS_32, CREATE_HTTP_32, LIST_HTTP_16),
    "full": (CREATE_WS_32, CREATE_HTTP_32),
}
FLOOR_PLAN = {
    "normal": {
        "websockets": (CREATE_WS_1, CREATE_WS_32),
        "starlette": (CREATE_HTTP_1, CREATE_WS_1),
    },
    "full": {"websockets": (CREATE_WS_32,), "starlette": (CREATE_HTTP_32,)},
}


async def create_over_ws(conn: WsConnection, n: int) -> object:
    return await conn.rpc("createTask", {"title": f"task {n}"})


async def create_over_http(conn: HttpConnection, n: int) -> object:
    return await conn.post_json("/api/rpc/createTask", {"title": f"task {n}"})


async def list_over_http(conn: HttpConnection, n: int) -> object:
    return await conn.post_json("/api/rpc/listTasks", {"limit": LIST_LIMIT})


OPS: dict[tuple[str, str], Op[Any]] = {
    ("createTask", "ws"): create_over_ws,
    ("createTask", "http"): create_over_http,
    ("listTasks", "http"): list_over_http,
}


async def open_clients(
    server: Server, transport: str, count: int, token: str | None, ws_impl: str = "raw"
) -> list[Any]:
    """Open `count` connections at once (WebSockets authenticate when given a token)."""
    if transport == "ws":
        url = server.url("ws", "/ws")
        opening = (WsConnection.open(url, token, ws_impl) for _ in range(count))
        return list(await asyncio.gather(*opening))
    conns = [HttpConnection("127.0.0.1", server.port, token) for _ in range(count)]
    await asyncio.gather(*(conn.connect() for conn in conns))
    return conns


@asynccontextmanager
async def running(server: Server) -> AsyncIterator[Server]:
    try:
        await server.wait_ready()
        yield server
    finally:
        server.stop()


@dataclass
class Bench:
    """Runs the plan, collecting one Row per measurement and the failures that stopped one."""

    warmup: float
    duration: float
    workdir: Path
    ws_impl: str
    rows: list[Row] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)

    async def run_scenario(
        self, server: Server, system: str, durability: str, scenario: Scenario, token: str | None
    ) -> None:
        transport, count = scenario.transport, scenario.clients
        clients = await open_clients(server, transport, count, token, self.ws_impl)
        try:
            op = OPS[(scenario.name, scenario.transport)]
            result = await measure(clients, op, self.warmup, self.duration)
        finally:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        self.add(Row(scenario.name, system, scenario.transport, durability, scenario.clients, result))

    def add(self, row: Row) -> None:
        self.rows.append(row)
        print(f"  {' '.join(map(str, row.key()))}: {row.result.ops_per_s:,.0f} ops/s", file=sys.stderr)

    async def floors(self, durability: str) -> None:
        for kind, scenarios in FLOOR_PLAN[durability].items():
            db = self.workdir / f"floor-{kind}-{durability}.db"
            async with running(spawn_floor(kind, db, SYNCHRONOUS[durability])) as server:
                for scenario in scenarios:
                    await self.run_scenario(server, f"floor: {kind}", durability, scenario, None)

    async def nanotypedb(self, durability: str) -> None:
        data_dir = self.workdir / f"nanotypedb-{durability}"
        try:
            async with running(spawn_nanotypedb(data_dir, durability)) as server:
                token = mint_token(data_dir)
                for scenario in SERVER_PLAN[durability]:
                    if scenario.name == "listTasks":
                        await self.check_list(server, token)
                    await self.run_scenario(server, NANOTYPEDB, durability, scenario, token)
        except Exception as exc:  # report what stopped the server run; the floors still count
            self.failures.append(f"nanotypedb ({durability}): {type(exc).__name__}: {exc}")
            print(f"! {self.failures[-1]}", file=sys.stderr)

    async def check_list(self, server: Server, token: str) -> None:
        """Record how many rows one listTasks returns: the target assumes 50."""
        conn = HttpConnection("127.0.0.1", server.port, token)
        try:
            answer = await list_over_http(conn, 0)
        finally:
            await conn.close()
        self.notes["listTasks_rows_per_call"] = len(answer["data"])

    def fsync(self) -> None:
        latencies = fsync_loop(str(self.workdir / "fsync.db"), self.warmup, self.duration)
        self.add(Row(FSYNC, "sqlite3", "-", "full", 1, Measurement(self.duration, latencies)))

    async def run(self, with_server: bool) -> None:
        await self.floors("normal")
        if with_server:
            await self.nanotypedb("normal")
        self.fsync()
        if with_server:
            await self.nanotypedb("full")
        await self.floors("full")


RATIOS = {
    # name: (numerator row key, denominator row key); keys are (system, scenario, durability).
    "ws_1_vs_websockets_floor": (
        (NANOTYPEDB, CREATE_WS_1, "normal"),
        ("floor: websockets", CREATE_WS_1, "normal"),
    ),
    "ws_1_vs_starlette_ws_floor": (
        (NANOTYPEDB, CREATE_WS_1, "normal"),
        ("floor: starlette", CREATE_WS_1, "normal"),
    ),
    "http_1_vs_starlette_floor": (
        (NANOTYPEDB, CREATE_HTTP_1, "normal"),
        ("floor: starlette", CREATE_HTTP_1, "normal"),
    ),
    "ws_32_normal_vs_websockets_floor": (
        (NANOTYPEDB, CREATE_WS_32, "normal"),
        ("floor: websockets", CREATE_WS_32, "normal"),
    ),
    "ws_32_full_vs_fsync": ((NANOTYPEDB, CREATE_WS_32, "full"), ("sqlite3", None, "full")),
    "http_32_full_vs_fsync": ((NANOTYPEDB, CREATE_HTTP_32, "full"), ("sqlite3", None, "full")),
    "ws_32_full_vs_websockets_floor": (
        (NANOTYPEDB, CREATE_WS_32, "full"),
        ("floor: websockets", CREATE_WS_32, "full"),
    ),
    "http_32_full_vs_starlette_floor": (
        (NANOTYPEDB, CREATE_HTTP_32, "full"),
        ("floor: starlette", CREATE_HTTP_32, "full"),
    ),
}


def rate(rows: list[Row], system: str, scenario: Scenario | None, durability: str) -> float | None:
    """ops/s of the row that matches; scenario None means the fsync loop."""
    for row in rows:
        if (row.system, row.durability) != (system, durability):
            continue
        if scenario is None and row.scenario == FSYNC:
            return row.result.ops_per_s
        if scenario and (row.scenario, row.transport, row.clients) == (
            scenario.name,
            scenario.transport,
            scenario.clients,
        ):
            return row.result.ops_per_s
    return None


def ratios(rows: list[Row]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, (top, bottom) in RATIOS.items():
        a, b = rate(rows, *top), rate(rows, *bottom)
        out[name] = round(a / b, 3) if a is not None and b else None
    return out


def targets(rows: list[Row], found: dict[str, float | None]) -> list[Target]:
    """The issue's three targets."""
    return [
        Target(
            "ws_1_vs_websockets_floor",
            "createTask, 1 client, WS: nanotypedb / floor",
            found["ws_1_vs_websockets_floor"],
            0.60,
            "ratio",
        ),
        Target(
            "ws_32_full_vs_fsync",
            "createTask, 32 clients WS, full / 1 fsync per mutation",
            found["ws_32_full_vs_fsync"],
            3.0,
            "ratio",
        ),
        Target(
            "list_http_16",
            "listTasks (50 rows), HTTP, 16 connections",
            rate(rows, NANOTYPEDB, LIST_HTTP_16, "normal"),
            2000.0,
            "ops/s",
        ),
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds discarded (1)")
    parser.add_argument("--duration", type=float, default=4.0, help="seconds measured (4)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file to write")
    parser.add_argument(
        "--tmp",
        type=Path,
        default=None,
        help="where data files go; pick the disk under test (default: $TMPDIR)",
    )
    parser.add_argument(
        "--floors-only",
        action="store_true",
        help="measure the floors and the fsync loop, not NanoTypeDB",
    )
    parser.add_argument(
        "--ws-client",
        choices=["raw", "websockets"],
        default="raw",
        help="WebSocket load client: raw frames over asyncio streams, or the websockets library",
    )
    parser.add_argument("--keep", action="store_true", help="keep data files and server logs")
    return parser.parse_args(argv)


async def run(args: argparse.Namespace, workdir: Path) -> Bench:
    bench = Bench(args.warmup, args.duration, workdir, args.ws_client)
    await bench.run(with_server=not args.floors_only)
    return bench


def report(bench: Bench, args: argparse.Namespace) -> None:
    found = ratios(bench.rows)
    goals = targets(bench.rows, found)
    print(render(bench.rows, goals))
    for failure in bench.failures:
        print(f"! {failure}")
    settings = {"warmup_s": args.warmup, "duration_s": args.duration, "ws_client": args.ws_client}
    extra = {"settings": settings, "notes": bench.notes, "failures": bench.failures}
    write_json(args.out, bench.rows, goals, {**extra, "ratios": found})
    print(f"\nwrote {args.out}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.floors_only and (why := nanotypedb_available()):
        print(f"nanotypedb is not runnable (use --floors-only to skip it):\n{why}", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="ntdb-bench-", dir=args.tmp))
    print(f"data in {workdir}", file=sys.stderr)
    try:
        bench = uvloop.run(run(args, workdir))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    report(bench, args)
    return 1 if bench.failures else 0


if __name__ == "__main__":
    sys.exit(main())
