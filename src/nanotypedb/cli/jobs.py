"""`nanotypedb jobs list|redrive|purge` and `nanotypedb worker`: the job queue from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import click

from ..lib import logs
from ..service import Paths, Service, load_app
from ..settings import Config
from ..storage import jobs as store
from ..storage.audit import Act, AuditLog
from ..storage.engine import Durability, connect
from .audit import origin
from .env import environment

log = logging.getLogger("nanotypedb")
T = TypeVar("T")


def queue_path(data_dir: str, env: str) -> Path:
    """The database of the environment `env`, once it is known to exist."""
    environment(data_dir, env)
    return Paths(Path(data_dir)).env_db(env)


@contextlib.contextmanager
def _queue(path: Path) -> Iterator[sqlite3.Connection]:
    """The environment's database, for statements on `_jobs` beside a running server (it waits its turn)."""
    if not path.exists():
        raise click.ClickException(f"No database at {path}: start the server once first.")
    conn = connect(path, Durability.FULL)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.close()


def _in_queue(path: Path, fn: Callable[[sqlite3.Connection], T]) -> T:
    try:
        with _queue(path) as conn:
            return fn(conn)
    except sqlite3.OperationalError as exc:
        raise click.ClickException(f"The job queue is not there ({exc}): start the server once first.") from None


def list_jobs(path: Path, status: str | None, queue: str | None, limit: int, as_json: bool) -> None:
    jobs, counts = _in_queue(path, lambda c: (store.listing(c, status, queue, limit), store.counts(c)))
    if as_json:
        click.echo(json.dumps({"jobs": [j.to_dict() for j in jobs], "counts": counts}))
        return
    for j in jobs:
        last = j.errors[-1]["error"] if j.errors else ""
        click.echo(f"{j.id}\t{j.queue}\t{j.status}\t{j.attempts}/{j.max_attempts}\t{last}")
    click.echo(", ".join(f"{n} {s}" for s, n in counts.items()), err=True)


def redrive(path: Path, env: str, ids: tuple[int, ...], queue: str | None, audited: bool = True) -> None:
    def run(conn: sqlite3.Connection) -> int:
        count = store.redrive(conn, list(ids) or None, queue)
        after = {"ids": list(ids) or None, "queue": queue, "count": count}
        _audit(conn, env, audited, "jobs redrive", Act("jobs.redrive", "_jobs", None, None, after))
        return count

    count = _in_queue(path, run)
    click.echo(f"Re-drove {count} dead job(s).", err=True)


def purge(path: Path, env: str, status: str, queue: str | None, audited: bool = True) -> None:
    def run(conn: sqlite3.Connection) -> int:
        count = store.purge(conn, status, queue)
        after = {"status": status, "queue": queue, "count": count}
        _audit(conn, env, audited, "jobs purge", Act("jobs.purge", "_jobs", None, None, after))
        return count

    count = _in_queue(path, run)
    click.echo(f"Purged {count} {status} job(s).", err=True)


def _audit(conn: sqlite3.Connection, env: str, audited: bool, command: str, act: Act) -> None:
    """The act's audit entry in the chain of the environment `env` (whose database `conn` is), in the
    transaction of the act itself."""
    if audited:
        AuditLog(env).append(conn, origin(command), [act])


def run_worker(config: Config) -> None:
    """Run the app's job handlers against the data directory until SIGTERM or Ctrl+C."""
    logs.configure(config.log_level, config.log_format)
    service = Service(load_app(config.app), config)
    service.open(first_key=False)
    handlers = sorted(service.app.functions.jobs)
    log.info(
        "worker %s runs %s, %d at a time", service.jobs.worker, ", ".join(handlers) or "no jobs", config.job_workers
    )
    try:
        asyncio.run(_work(service))
    finally:
        service.close()


async def _work(service: Service) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    try:
        await stop.wait()
    finally:
        await service.stop()
