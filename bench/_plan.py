"""What the RPC benchmark measures, in which order, and the ratios and targets it reports."""

from __future__ import annotations

from collections.abc import Sequence

from _report import Row, Scenario, Target


def floor_system(kind: str) -> str:
    """How a floor (a bench/_floor.py server of this kind) is named in rows."""
    return f"floor: {kind}"


NANOTYPEDB = "nanotypedb"
NANOTYPEDB_UNCACHED = "nanotypedb, no cache"
WEBSOCKETS_FLOOR = floor_system("websockets")
STARLETTE_FLOOR = floor_system("starlette")
SQLITE3 = "sqlite3"

CREATE_WS_1 = Scenario("createTask", "ws", 1)
CREATE_HTTP_1 = Scenario("createTask", "http", 1)
CREATE_WS_32 = Scenario("createTask", "ws", 32)
CREATE_HTTP_32 = Scenario("createTask", "http", 32)
LIST_HTTP_16 = Scenario("listTasks", "http", 16)
FSYNC_LOOP = Scenario("1 fsync/mutation", "in-process", 1)

# Durability -> scenarios. The run goes floors (normal), NanoTypeDB (normal), the fsync loop,
# NanoTypeDB (full), the fsync loop again, floors (full): each figure a target compares sits
# next to its reference in time, since the machine is noisy and neighbours share the noise.
SERVER_PLAN: dict[str, tuple[Scenario, ...]] = {
    "normal": (CREATE_WS_1, CREATE_HTTP_1, CREATE_WS_32, CREATE_HTTP_32, LIST_HTTP_16),
    "full": (CREATE_WS_32, CREATE_HTTP_32),
}
# Durability -> floor kind (a bench/_floor.py server) -> scenarios.
FLOOR_PLAN: dict[str, dict[str, tuple[Scenario, ...]]] = {
    "normal": {"websockets": (CREATE_WS_1, CREATE_WS_32), "starlette": (CREATE_HTTP_1, CREATE_WS_1)},
    "full": {"websockets": (CREATE_WS_32,), "starlette": (CREATE_HTTP_32,)},
}

Key = tuple[str, Scenario, str]  # (system, scenario, durability)

# Ratio name -> (numerator, denominator). The first two feed the targets.
RATIOS: dict[str, tuple[Key, Key]] = {
    "ws_1_vs_websockets_floor": (
        (NANOTYPEDB, CREATE_WS_1, "normal"),
        (WEBSOCKETS_FLOOR, CREATE_WS_1, "normal"),
    ),
    "ws_32_full_vs_fsync": ((NANOTYPEDB, CREATE_WS_32, "full"), (SQLITE3, FSYNC_LOOP, "full")),
    "http_32_full_vs_fsync": ((NANOTYPEDB, CREATE_HTTP_32, "full"), (SQLITE3, FSYNC_LOOP, "full")),
    "ws_1_vs_starlette_ws_floor": (
        (NANOTYPEDB, CREATE_WS_1, "normal"),
        (STARLETTE_FLOOR, CREATE_WS_1, "normal"),
    ),
    "http_1_vs_starlette_floor": (
        (NANOTYPEDB, CREATE_HTTP_1, "normal"),
        (STARLETTE_FLOOR, CREATE_HTTP_1, "normal"),
    ),
    "ws_32_normal_vs_websockets_floor": (
        (NANOTYPEDB, CREATE_WS_32, "normal"),
        (WEBSOCKETS_FLOOR, CREATE_WS_32, "normal"),
    ),
    "ws_32_full_vs_websockets_floor": (
        (NANOTYPEDB, CREATE_WS_32, "full"),
        (WEBSOCKETS_FLOOR, CREATE_WS_32, "full"),
    ),
    "http_32_full_vs_starlette_floor": (
        (NANOTYPEDB, CREATE_HTTP_32, "full"),
        (STARLETTE_FLOOR, CREATE_HTTP_32, "full"),
    ),
}


def rate(rows: Sequence[Row], key: Key) -> float | None:
    """ops/s of the row measured for `key`, None if it was not measured."""
    for row in rows:
        if (row.system, row.scenario, row.durability) == key:
            return row.result.ops_per_s
    return None


def ratios(rows: Sequence[Row]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, (top, bottom) in RATIOS.items():
        a, b = rate(rows, top), rate(rows, bottom)
        out[name] = round(a / b, 3) if a is not None and b else None
    return out


def targets(rows: Sequence[Row]) -> list[Target]:
    """The issue's three targets."""
    found = ratios(rows)
    listing = rate(rows, (NANOTYPEDB, LIST_HTTP_16, "normal"))
    return [
        Target(
            "ws_1_vs_websockets_floor",
            "createTask, 1 client, WS, normal: nanotypedb / websockets floor",
            found["ws_1_vs_websockets_floor"],
            0.60,
            "ratio",
        ),
        Target(
            "ws_32_full_vs_fsync",
            "createTask, 32 clients, WS, full: nanotypedb / 1 fsync per mutation",
            found["ws_32_full_vs_fsync"],
            3.0,
            "ratio",
        ),
        Target("list_http_16", "listTasks (50 rows), HTTP, 16 connections", listing, 2000.0, "ops/s"),
    ]
