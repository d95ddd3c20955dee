"""Embeddings per second with the local model (all-MiniLM-L6-v2, int8 ONNX): cold, from the cache, end to end.

Through the gateway, in this process: `AIGateway(path, {"local": MiniLM()}).embed("local", texts)`
on a fresh cache file. The model loads first (timed, not counted). Cold: texts it has never seen,
one per call, then 32 per call; cached: the same texts again. Each line gives texts per second
of busy time and the p50 and p99 of one call.

End to end: `python -m nanotypedb serve` with the bundled tasks app and `--embedding-provider
local`; K `createTask` calls over 16 HTTP connections (as the admin key), each queueing the
built-in `_embed` job; timed from the first call until every row's `vector_status` is
`indexed`, read from the server's SQLite file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from _clients import HttpConnection
from _jobs_queue import admin_key
from _jobs_report import Line
from _procs import spawn_nanotypedb
from nanotypedb.ai import local
from nanotypedb.ai.gateway import AIGateway

MEASUREMENT = "embeddings"
E2E = "embeddings, end to end"

VERBS = ("Write", "Review", "Ship", "Fix", "Plan", "Test", "Refactor", "Document", "Deploy", "Triage", "Draft")
THINGS = ("the login page", "release notes", "the billing export", "search ranking", "the onboarding email",
          "flaky CI jobs", "the API docs", "the mobile layout", "backup restore", "the pricing table")  # fmt: skip
WHEN = ("before Friday", "for the Q3 review", "with the design team", "after the migration", "this sprint")


@dataclass(frozen=True)
class Settings:
    singles: int = 200  # cold texts embedded one per call (then the same again, cached)
    batched: int = 512  # cold texts embedded 32 per call (then the same again, cached)
    batch: int = 32
    cached_passes: int = 3  # the cached passes repeat, so a p99 rests on more calls
    tasks: int = 300  # end to end: rows created, each embedded by its own `_embed` job
    clients: int = 16


def texts(n: int, seed: int) -> list[str]:
    """n distinct task-like titles of 6-12 words (numbered, so no two are the same)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        words = [str(rng.choice(VERBS)), str(rng.choice(THINGS)), str(rng.choice(WHEN))]
        out.append(f"{' '.join(words)} (item {seed}-{i})")
    return out


def line(case: str, per_call: list[float], count: int, note: str = "") -> Line:
    ms = np.asarray(per_call) * 1000
    p50, p99 = (float(v) for v in np.percentile(ms, [50, 99]))
    busy = float(np.sum(per_call))
    return Line(MEASUREMENT, case, count, p50, p99, per_s=count / busy, seconds=busy, note=note)


async def calls(gateway: AIGateway, batches: list[list[str]]) -> list[float]:
    spent = []
    for batch in batches:
        start = time.perf_counter()
        await gateway.embed("local", batch)
        spent.append(time.perf_counter() - start)
    return spent


async def through_gateway(workdir: Path, settings: Settings) -> list[Line]:
    gateway = AIGateway(workdir / "ai.sqlite3", {"local": local.MiniLM()})
    try:
        start = time.perf_counter()
        await gateway.embed("local", ["warm-up: the model loads on the first call"])
        loaded = time.perf_counter() - start
        singles = [[t] for t in texts(settings.singles, seed=1)]
        batched = texts(settings.batched, seed=2)
        groups = [batched[i : i + settings.batch] for i in range(0, len(batched), settings.batch)]
        b = settings.batch
        lines = [
            line("local model, cold, 1 text per call", await calls(gateway, singles), len(singles)),
            line(f"local model, cold, {b} per call", await calls(gateway, groups), len(batched)),
        ]
        passes = settings.cached_passes
        again = [t for _ in range(passes) for t in await calls(gateway, singles)]
        lines.append(line("local model, from the cache, 1 per call", again, passes * len(singles)))
        again = [t for _ in range(passes) for t in await calls(gateway, groups)]
        lines.append(line(f"local model, from the cache, {b} per call", again, passes * len(batched)))
        stats = gateway.stats()
        expected_hits = passes * (len(singles) + len(batched))
        if stats["cache_hits"] != expected_hits:
            raise RuntimeError(f"expected {expected_hits} cache hits, the gateway counted {stats['cache_hits']}")
        lines.append(Line(MEASUREMENT, "local model, load + first call", 1, seconds=loaded, note="not counted above"))
        return lines
    finally:
        await gateway.aclose()


async def end_to_end(workdir: Path, settings: Settings) -> Line:
    data = workdir / "embed-e2e"
    extra = ("--embedding-provider", "local", "--log-level", "warning")
    server = spawn_nanotypedb(data, "normal", extra)
    conns: list[HttpConnection] = []
    try:
        await server.wait_ready()
        key = admin_key(server)
        conns = [HttpConnection("127.0.0.1", server.port, key) for _ in range(settings.clients)]
        await conns[0].post_json("/api/rpc/searchTasks", {"query": "warm the model up"})  # loads the model
        db = sqlite3.connect(f"file:{data / 'env' / 'dev' / 'db.sqlite3'}?mode=ro", uri=True, isolation_level=None)
        titles = iter(texts(settings.tasks, seed=3))
        cpu = server.cpu_seconds()
        start = time.perf_counter()

        async def client(conn: HttpConnection) -> None:
            for title in titles:
                await conn.post_json("/api/rpc/createTask", {"title": title})

        await asyncio.gather(*(client(c) for c in conns))
        created = time.perf_counter() - start
        while True:
            indexed, total, failed = db.execute(
                "SELECT coalesce(sum(vector_status = 'indexed'), 0), count(*), "
                "coalesce(sum(vector_status = 'failed'), 0) FROM tasks"
            ).fetchone()
            if failed:
                raise RuntimeError(f"{failed} tasks failed to embed:\n{server.log_tail()}")
            if indexed == total == settings.tasks:
                break
            if time.perf_counter() - start > 120:
                raise RuntimeError(f"{indexed} of {total} tasks indexed after 120 s")
            await asyncio.sleep(0.02)
        seconds = time.perf_counter() - start
        db.close()
        busy = (server.cpu_seconds() - cpu) / seconds
        note = f"createTask x{settings.tasks} took {created:.2f} s; server cpu {busy:.0%}"
        case = f"createTask -> indexed, tasks app, {settings.clients} conns, 4 workers"
        return Line(E2E, case, settings.tasks, per_s=settings.tasks / seconds, seconds=seconds, note=note)
    finally:
        for conn in conns:
            await conn.close()
        server.stop()


def measure(workdir: Path, settings: Settings | None = None) -> list[Line]:
    settings = settings or Settings()
    if not local.available():
        raise RuntimeError(f"the local model is not installed (missing: {', '.join(local.missing())})")
    lines = asyncio.run(through_gateway(workdir, settings))
    lines.append(asyncio.run(end_to_end(workdir, settings)))
    for item in lines:
        print(f"  {item.measurement}, {item.case}: {' '.join(item.cells()[3:])}", flush=True)
    return lines
