"""JobRunner: claims due jobs with a lease, runs their handlers, and records each outcome.

Delivery is at least once: a worker that dies holding a job leaves it running until its
lease ends, and then another worker claims it again. A handler must therefore be
idempotent. One claim takes up to `concurrency` jobs in one write; they run together,
and their outcomes are written together, so a busy queue costs two writes per batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from typing import Any

from ..errors import NanoTypeDBError
from ..functions.jobs import JobSpec
from ..storage import jobs as store
from ..storage.engine import Commit, SqliteEngine
from ..storage.transaction import Transaction
from .context import JobCtx

log = logging.getLogger(__name__)


class JobRunner:
    """Runs the jobs of the handlers in `specs`, in this process, `concurrency` at a time."""

    def __init__(
        self,
        engine: SqliteEngine,
        specs: dict[str, JobSpec],
        *,
        concurrency: int = 4,
        lease: float = 60.0,
        poll: float = 1.0,
        services: dict[str, Any] | None = None,
    ) -> None:
        self.engine = engine
        self.specs = specs
        self.concurrency = concurrency
        # A lease outlives the slowest handler, so a live worker never loses its job to another.
        self.lease = max([lease, *(s.timeout + 10 for s in specs.values())])
        self.poll = poll
        self.services = services or {}
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.done = 0
        self.failed = 0
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        engine.on_commit(self._on_commit)

    @property
    def running(self) -> bool:
        """Whether the workers' task is alive (it never starts when no job handler is defined)."""
        return self._task is not None and not self._task.done() and not self._stopping

    def start(self) -> None:
        if self._task is None and self.specs:
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._run(), name="ntdb-jobs")

    async def stop(self, timeout: float = 10.0) -> None:
        """Let the batch in hand finish (up to `timeout`); a job cut off is claimed again after its lease."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout)
            except TimeoutError:
                self._task.cancel()
            self._task = None

    def _on_commit(self, commits: list[Commit]) -> None:
        if self._loop is None or not any(c.info.get("jobs") or c.info.get("external") for c in commits):
            return
        self._loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        while not self._stopping:
            try:
                batch = await self._claim()
                if batch:
                    outcomes = await asyncio.gather(*(self._attempt(job) for job in batch))
                    await self._settle(batch, outcomes)
                else:
                    await self._idle()
            except Exception:
                # The database may be closing, or busy with another process: try again shortly.
                log.exception("job runner step failed")
                await asyncio.sleep(self.poll)

    async def _claim(self) -> list[store.Job]:
        def claim(tx: Transaction) -> list[store.Job]:
            return store.claim(tx.conn, self.worker, self.concurrency, self.lease, self.specs)

        return (await self.engine.write(claim, versioned=False)).value

    async def _idle(self) -> None:
        """Sleep until a commit queues a job, the next one falls due, or `poll` seconds pass."""
        self._wake.clear()  # before reading: a job queued after this read still wakes the wait
        due = self.engine.read_sync(lambda tx: store.next_due(tx.conn, self.specs)).value
        wait = self.poll if due is None else min(self.poll, max(0.0, due - time.time()))
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _attempt(self, job: store.Job) -> str | None:
        """Run one job; None when it succeeded, else what went wrong, for its error history."""
        spec = self.specs[job.queue]
        ctx = JobCtx(job.id, job.queue, job.attempts, job.payload, self.engine, self.specs, self.services)
        try:
            await asyncio.wait_for(_call(spec.handler, ctx), spec.timeout)
        except TimeoutError:
            return f"Timeout: the handler ran longer than {spec.timeout:g} s."
        except NanoTypeDBError as exc:
            return f"{exc.code}: {exc.message}"
        except Exception as exc:
            log.exception("job %s (%s) failed on attempt %d", job.id, job.queue, job.attempts)
            return f"{type(exc).__name__}: {exc}"
        return None

    async def _settle(self, batch: list[store.Job], outcomes: list[str | None]) -> None:
        now = time.time()

        def settle(tx: Transaction) -> None:
            store.complete(
                tx.conn, [job.id for job, error in zip(batch, outcomes, strict=True) if error is None], self.worker
            )
            for job, error in zip(batch, outcomes, strict=True):
                if error is not None:
                    spec = self.specs[job.queue]
                    retry = now + spec.delay(job.attempts) if job.attempts < job.max_attempts else None
                    store.fail(tx.conn, job, self.worker, error, retry)

        await self.engine.write(settle, versioned=False)
        failures = sum(1 for e in outcomes if e is not None)
        self.done += len(batch) - failures
        self.failed += failures


async def _call(handler: Callable[..., Any], ctx: JobCtx) -> None:
    if inspect.iscoroutinefunction(handler):
        await handler(ctx, ctx.payload)
    else:
        # A plain `def` may be slow (a local model, say): it runs off the event loop.
        result = await asyncio.to_thread(handler, ctx, ctx.payload)
        if inspect.isawaitable(result):
            await result
