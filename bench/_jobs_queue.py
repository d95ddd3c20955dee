"""No-op jobs per second through the durable queue (target >= 1,000/s), on a real server in a subprocess.

The app (written to the work folder) has one job, `noop`, an `async def` that does nothing, and
two mutations: `enqueueMany(n)` queues n jobs in one transaction, `enqueueOne()` queues one. For
each durability and `--job-workers` count one server runs `python -m nanotypedb serve --app ...`
(so the load client never shares its GIL) and takes two loads in turn, each timed from the
first enqueue until the queue is empty:

- burst: one `enqueueMany(n)` call, then the workers drain a backlog of n;
- stream: n `enqueueOne()` calls from 16 HTTP connections, the workers running meanwhile.

The queue is watched by reading the server's SQLite file every 20 ms (read only, WAL: it never
blocks the server's writes): `SELECT count(*), sum(status = 'running') FROM _jobs`. One runner
claims a batch, runs it, settles it; between claim and settle the batch is `running`, so a
non-zero `running` count is the size of the batch in hand: the mean of those samples estimates
jobs per claim.

`claim_cost` times the claim's SQL alone (`storage.jobs.claim`, in memory) against backlogs of
growing size: its cost grows with the number of due jobs, which is why a burst's rate depends
on its size.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from _clients import HttpConnection
from _jobs_report import Line, timed
from _procs import Server, spawn_nanotypedb
from nanotypedb.storage import jobs as jobs_store

MEASUREMENT = "no-op jobs"

APP = '''"""A no-op job and two ways to queue it, for bench/jobs.py."""

from typing import Any

from nanotypedb import App, Ctx

app = App("noop")


@app.job(name="noop")
async def noop(ctx: Any, payload: Any) -> None:
    return None


@app.mutation(name="enqueueMany")
def enqueue_many(ctx: Ctx, n: int) -> int:
    for _ in range(n):
        ctx.enqueue("noop")
    return n


@app.mutation(name="enqueueOne")
def enqueue_one(ctx: Ctx) -> int:
    return ctx.enqueue("noop")
'''

POLL_S = 0.02
STREAM_CLIENTS = 16
DRAIN_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Settings:
    configs: tuple[tuple[str, int], ...] = (("normal", 4), ("normal", 16), ("full", 4), ("full", 16))
    burst: tuple[int, ...] = (10_000,)  # backlog sizes: the claim's cost grows with the backlog
    stream: int = 10_000
    claim_backlogs: tuple[int, ...] = (1_000, 10_000, 100_000)


@dataclass
class Drained:
    seconds: float  # first enqueue sent until the queue was seen empty
    enqueue_seconds: float  # first enqueue sent until the last one answered
    batch: float | None  # mean non-zero `running` count sampled: jobs per claim
    server_cpu: float  # seconds of the server's CPU over the run


def admin_key(server: Server, timeout: float = 10.0) -> str:
    """The first admin key, which `serve` prints once at first start (into the log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"Admin API key \(shown once\): (\S+)", server.log_tail(100_000))
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise RuntimeError(f"no admin key in the server's log:\n{server.log_tail()}")


async def watch(db: sqlite3.Connection, started: float, producing: asyncio.Task[float]) -> tuple[float, float | None]:
    """Poll the queue until it is empty and the producers are done; the seconds since `started`, mean batch."""
    batches: list[int] = []
    while True:
        total, running = db.execute("SELECT count(*), coalesce(sum(status = 'running'), 0) FROM _jobs").fetchone()
        if running:
            batches.append(int(running))
        if total == 0 and producing.done():
            return time.perf_counter() - started, (sum(batches) / len(batches) if batches else None)
        if time.perf_counter() - started > DRAIN_TIMEOUT_S:
            raise RuntimeError(f"{total} jobs still queued after {DRAIN_TIMEOUT_S:.0f} s")
        await asyncio.sleep(POLL_S)


async def burst(conn: HttpConnection, n: int) -> float:
    await conn.post_json("/api/rpc/enqueueMany", {"n": n})
    return time.perf_counter()


async def stream(conns: list[HttpConnection], n: int) -> float:
    left = iter(range(n))

    async def client(conn: HttpConnection) -> None:
        for _ in left:  # shared: each call takes the next number
            await conn.post_json("/api/rpc/enqueueOne", {})

    await asyncio.gather(*(client(c) for c in conns))
    return time.perf_counter()


async def drain(server: Server, db: sqlite3.Connection, load: Coroutine[None, None, float]) -> Drained:
    cpu = server.cpu_seconds()
    started = time.perf_counter()
    producing = asyncio.ensure_future(load)
    seconds, batch = await watch(db, started, producing)
    return Drained(seconds, producing.result() - started, batch, server.cpu_seconds() - cpu)


async def one_server(workdir: Path, app: Path, durability: str, workers: int, settings: Settings) -> list[Line]:
    data = workdir / f"queue-{durability}-{workers}"
    extra = ("--app", str(app), "--job-workers", str(workers), "--log-level", "warning")
    server = spawn_nanotypedb(data, durability, extra)
    conns: list[HttpConnection] = []
    db: sqlite3.Connection | None = None
    lines = []
    try:
        await server.wait_ready()
        key = admin_key(server)
        conns = [HttpConnection("127.0.0.1", server.port, key) for _ in range(STREAM_CLIENTS)]
        await conns[0].post_json("/api/rpc/enqueueMany", {"n": 10})  # warm-up: first call, first claims
        db = sqlite3.connect(f"file:{data / 'env' / 'dev' / 'db.sqlite3'}?mode=ro", uri=True, isolation_level=None)
        await watch(db, time.perf_counter(), asyncio.ensure_future(asyncio.sleep(0, 0.0)))
        runs: list[tuple[str, int, Callable[[], Coroutine[None, None, float]]]] = [
            (f"burst {n:,}", n, partial(burst, conns[0], n)) for n in settings.burst
        ]
        runs.append((f"stream {settings.stream:,}", settings.stream, partial(stream, conns, settings.stream)))
        for label, n, load in runs:
            for conn in conns:  # fresh connections: the server closes idle ones after 5 s
                await conn.close()
            done = await drain(server, db, load())
            how = "1 enqueueMany" if label.startswith("burst") else f"{STREAM_CLIENTS} conns x enqueueOne"
            note = f"{how} {done.enqueue_seconds:.2f} s; jobs/claim {_batch(done.batch)}"
            note += f"; server cpu {done.server_cpu / done.seconds:.0%}"
            case = f"{label}, {durability}, {workers} workers"
            lines.append(Line(MEASUREMENT, case, n, per_s=n / done.seconds, seconds=done.seconds, note=note))
            print(f"  {case}: {n / done.seconds:,.0f}/s ({note})", flush=True)
    finally:
        if db is not None:
            db.close()
        for conn in conns:
            await conn.close()
        server.stop()
    return lines


def _batch(value: float | None) -> str:
    return "-" if value is None else f"~{value:.1f}"


def claim_cost(backlogs: tuple[int, ...], limit: int = 4, seconds: float = 0.3) -> list[Line]:
    """One `storage.jobs.claim` of `limit` jobs from a backlog of n due jobs, in memory: the SQL alone."""
    lines = []
    for n in backlogs:
        conn = sqlite3.connect(":memory:", isolation_level=None)
        for statement in jobs_store.DDL:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO _jobs (queue, payload, max_attempts, run_at, created_at) VALUES ('noop', 'null', 4, ?, ?)",
            ((i * 1e-6, i * 1e-6) for i in range(n)),
        )
        spent: list[float] = []
        while sum(spent) < seconds:
            conn.execute("BEGIN")
            start = time.perf_counter()
            jobs_store.claim(conn, "bench", limit, 60.0, ["noop"])
            spent.append(time.perf_counter() - start)
            conn.execute("ROLLBACK")  # the backlog stays n for the next claim
        conn.close()
        case = f"claim {limit} from a backlog of {n:,} due jobs"
        lines.append(timed("claim (SQL only)", case, spent, note=f"rate = claims/s; x{limit} = the jobs/s ceiling"))
    return lines


def measure(workdir: Path, settings: Settings | None = None) -> list[Line]:
    settings = settings or Settings()
    app = workdir / "noop_app.py"
    app.write_text(APP)
    lines: list[Line] = claim_cost(settings.claim_backlogs)
    for durability, workers in settings.configs:
        lines += asyncio.run(one_server(workdir, app, durability, workers, settings))
    return lines
