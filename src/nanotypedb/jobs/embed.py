"""Embeddings of embedded tables: the built-in `_embed` job, the in-memory index kept in step, and search.

A row's insert or edit queues `_embed` in the same transaction (functions/db.py). The job
embeds the row's text through the AI gateway and stores the vector only if the row still
holds the content it was queued for: a job made stale by a newer edit never overwrites
the newer vector. Each indexed row is announced to `on_indexed` listeners (semantic
subscriptions).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from ..ai.gateway import AIGateway
from ..auth.principal import Principal
from ..errors import ValidationFailed
from ..functions import embedding
from ..functions.db import Db
from ..functions.jobs import JobSpec
from ..storage.engine import Commit, SqliteEngine
from ..storage.schema import TableSchema
from ..vectors import store as vector_store
from ..vectors.index import VectorIndex
from ..vectors.rls import accept_visible
from .context import JobCtx

log = logging.getLogger(__name__)
Indexed = Callable[[str, int, npt.NDArray[np.float32]], None]


class Embeddings:
    """The embedded tables of one engine, their vectors, and the provider that computes them."""

    def __init__(self, engine: SqliteEngine, gateway: AIGateway, provider: str, tables: Mapping[str, TableSchema]):
        self.engine = engine
        self.gateway = gateway
        self.provider = provider
        self.tables = {name: t for name, t in tables.items() if embedding.columns(t)}
        self.index = VectorIndex()
        self.on_indexed: list[Indexed] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        engine.on_commit(self._on_commit)

    def job(self, retries: int = 3, timeout: float = 60.0, backoff: float = 2.0) -> JobSpec:
        """The `_embed` job: the seed's 3 retries; a row whose last attempt fails is marked `failed`."""
        cap = max(backoff, 300.0)
        return JobSpec(embedding.EMBED_JOB, self._handle, retries, timeout, backoff, cap)

    def load(self) -> None:
        """Read every stored vector into memory (at start-up, and after another process wrote)."""
        # Unknown (0) until the provider first answers: then every stored vector is loaded.
        dims = self.gateway.embedder(self.provider).dims
        sizes = dict.fromkeys(self.tables, dims) if dims else None
        self.engine.read_sync(lambda tx: self.index.load(tx.conn, self.tables, sizes))

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop that owns the index: changes from other threads are applied there."""
        self._loop, self._thread = loop, threading.get_ident()

    async def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        return await self.gateway.embed(self.provider, texts)

    async def search(self, principal: Principal, table: str, query: str | list[float], k: int) -> list[dict[str, Any]]:
        """The `k` rows of `table` most similar to `query` (a text, or a vector) that `principal` may read,
        best first, each with its `_score` (cosine similarity)."""
        if table not in self.tables:
            raise ValidationFailed(f"Table {table!r} is not embedded: declare it with embed=(columns...).")
        if not 1 <= k <= 1000:
            raise ValidationFailed(f"k must be between 1 and 1000, got {k}.")
        vector = (await self.embed([query]))[0] if isinstance(query, str) else np.asarray(query, dtype=np.float32)

        def run(tx: Any) -> list[dict[str, Any]]:
            visible = accept_visible(Db(tx, principal), table)
            found = self.index.search(table, vector, k, visible)
            rows = visible.rows_for([row_id for row_id, _ in found])
            return [{**row, "_score": round(score, 6)} for row, (_, score) in zip(rows, found, strict=True)]

        return (await self.engine.read(run)).value

    async def _handle(self, ctx: JobCtx, payload: dict[str, Any]) -> None:
        schema = self.tables.get(payload["table"])
        if schema is None:
            return  # the table is no longer embedded: nothing to do
        row = await ctx.read(lambda db: db.get(schema.name, payload["id"]))
        if row is None or embedding.content_hash(schema, row) != payload["hash"]:
            return  # deleted, or edited since: a newer job carries the newer content
        try:
            vector = (await self.embed([embedding.text(schema, row)]))[0]
        except Exception:
            if ctx.attempt >= embedding_attempts(ctx):
                await ctx.write(lambda db: self._mark(db, schema, payload, "failed"))
            raise
        await ctx.write(lambda db: self._store(db, schema, payload, vector))

    def _store(self, db: Db, schema: TableSchema, payload: dict[str, Any], vector: Any) -> None:
        if self._mark(db, schema, payload, "indexed"):
            vector_store.put(db._tx.conn, schema.name, payload["id"], vector, payload["hash"])

    def _mark(self, db: Db, schema: TableSchema, payload: dict[str, Any], status: str) -> bool:
        """Set the row's status if it still holds the content of `payload` (checked inside the write)."""
        row = db.get(schema.name, payload["id"])
        if row is None or embedding.content_hash(schema, row) != payload["hash"]:
            return False
        db.update(schema.name, payload["id"], {embedding.STATUS: status})
        return True

    def _on_commit(self, commits: list[Commit]) -> None:
        if self._loop is not None and threading.get_ident() != self._thread:
            self._loop.call_soon_threadsafe(self._apply, commits)
        else:
            self._apply(commits)

    def _apply(self, commits: list[Commit]) -> None:
        """Keep the index in step: a deleted row leaves it, a newly indexed one enters it."""
        if any(c.info.get("external") for c in commits):
            self.load()  # another process wrote; what changed is unknown
            return
        for commit in commits:
            for change in commit.changes:
                if change.table not in self.tables:
                    continue
                if change.after is None:
                    self.index.remove(change.table, change.id)
                elif change.after.get(embedding.STATUS) == "indexed" and (
                    change.before is None or change.before.get(embedding.STATUS) != "indexed"
                ):
                    self._index_row(change.table, change.id)

    def _index_row(self, table: str, row_id: int) -> None:
        vector = self.engine.read_sync(lambda tx: vector_store.get(tx.conn, table, row_id)).value
        if vector is None:
            return
        self.index.upsert(table, row_id, vector)
        for listener in self.on_indexed:
            try:
                listener(table, row_id, vector)
            except Exception:
                log.exception("an on_indexed listener failed")


def embedding_attempts(ctx: JobCtx) -> int:
    """How many attempts the `_embed` job gets (its last one marks the row failed)."""
    spec = ctx._jobs.get(embedding.EMBED_JOB)
    return spec.max_attempts if spec is not None else 1
