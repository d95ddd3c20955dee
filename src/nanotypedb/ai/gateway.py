"""AIGateway: every model call of the server goes through it — cache, rate limit, timeout, log and counters.

`embed(provider, texts)` answers the texts it has seen from its persistent cache, keyed by (provider, model,
SHA-256 of the text), and sends only the others to the provider, once each, after taking a token from that
provider's bucket. A call that cannot get a token within its timeout fails with `RateLimited`; a provider that
fails or does not answer in time, with `UpstreamError`. Every call, answered or not, is logged and counted.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, NanoTypeDBError, RateLimited, UpstreamError
from ..lib.ratelimit import Rate, RateLimiter
from .embedder import Embedder, Vectors, normalise
from .store import COUNTERS, Call, GatewayStore

log = logging.getLogger("nanotypedb.ai")


class AIGateway:
    """The embedders by provider name, behind one cache and log in the SQLite file at `path`."""

    def __init__(
        self,
        path: Path,
        embedders: Mapping[str, Embedder],
        *,
        rates: Mapping[str, Rate] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.embedders = dict(embedders)
        self.rates = dict(rates or {})
        self.timeout = timeout
        self.store = GatewayStore(path)
        self._limiter = RateLimiter()
        self._counters = self.store.counters()  # kept in memory too, so stats() needs no query

    def embedder(self, provider: str) -> Embedder:
        try:
            return self.embedders[provider]
        except KeyError:
            known = ", ".join(sorted(self.embedders)) or "none"
            raise ConfigError(f"No embedding provider {provider!r} is configured (configured: {known}).") from None

    async def embed(self, provider: str, texts: list[str]) -> Vectors:
        """One unit vector per text, in order: float32 of shape (len(texts), dims)."""
        embedder = self.embedder(provider)
        if not texts:
            return np.zeros((0, embedder.dims), dtype=np.float32)  # nothing to do, nothing to log
        started, at = time.perf_counter(), time.time()
        hashes = [hashlib.sha256(text.encode()).digest() for text in texts]
        cached: dict[bytes, bytes] = {}
        try:
            cached = await self.store.lookup(provider, embedder.model, hashes)
            fresh = await self._fetch(embedder, provider, texts, hashes, cached, started)
        except Exception as exc:
            await self._log(provider, embedder, at, started, texts, hashes, cached, error=exc)
            raise
        await self._log(provider, embedder, at, started, texts, hashes, cached, new=fresh)
        return self._assemble(embedder, hashes, cached, fresh)

    def stats(self) -> dict[str, Any]:
        """Counters since the file was created: calls, texts, cache hits and misses, errors, hit_ratio; per provider."""
        per = {p: _with_ratio(c) for p, c in sorted(self._counters.items())}
        total = {key: sum(c[key] for c in self._counters.values()) for key in COUNTERS}
        return {**_with_ratio(total), "providers": per}

    async def calls(self, limit: int = 100, provider: str | None = None) -> list[Call]:
        """The newest logged calls first (the log keeps the last 100,000)."""
        return await self.store.calls(limit, provider)

    async def aclose(self) -> None:
        """Close the embedders' connections, then the file."""
        for embedder in self.embedders.values():
            closer = getattr(embedder, "aclose", None)
            if closer is not None:
                await closer()
        self.close()

    def close(self) -> None:
        """Close the file (from synchronous code: HTTP connections are dropped with their event loop)."""
        self.store.close()

    async def _fetch(
        self,
        embedder: Embedder,
        provider: str,
        texts: list[str],
        hashes: list[bytes],
        cached: Mapping[bytes, bytes],
        started: float,
    ) -> dict[bytes, Vectors]:
        missing = {h: t for h, t in zip(hashes, texts, strict=True) if h not in cached}  # each distinct text once
        if not missing:
            return {}
        deadline = started + self.timeout
        await self._take_token(provider, deadline)
        try:
            async with asyncio.timeout(max(0.0, deadline - time.perf_counter())):
                vectors = await embedder.embed(list(missing.values()))
        except TimeoutError:
            reason = f"no answer within the gateway's timeout of {self.timeout:g} s"
            raise _upstream(embedder, reason) from None
        return dict(zip(missing, _checked(embedder, vectors, len(missing)), strict=True))

    async def _take_token(self, provider: str, deadline: float) -> None:
        rate = self.rates.get(provider)
        while rate is not None and (wait := self._limiter.acquire(provider, rate)) > 0:
            if time.perf_counter() + wait > deadline:
                raise RateLimited(
                    f"The rate limit of the embedding provider {provider!r} ({rate.per_second:g}/s, burst "
                    f"{rate.burst}) leaves no call before the timeout: retry after {wait:.2f} s.",
                    retry_after=round(wait, 3),
                )
            await asyncio.sleep(wait)

    async def _log(
        self,
        provider: str,
        embedder: Embedder,
        at: float,
        started: float,
        texts: list[str],
        hashes: list[bytes],
        cached: Mapping[bytes, bytes],
        *,
        new: Mapping[bytes, Vectors] | None = None,
        error: BaseException | None = None,
    ) -> None:
        hits = sum(h in cached for h in hashes)
        code, reason = _describe(error)
        latency = (time.perf_counter() - started) * 1000
        call = Call(at, provider, embedder.model, len(texts), hits, round(latency, 3), code, reason)
        self._count(call)
        rows = [(h, v.astype("<f4").tobytes(), v.shape[0]) for h, v in (new or {}).items()]
        try:
            await self.store.record(call, rows)
        except (sqlite3.Error, RuntimeError):
            # The cache and the log serve the call; they must not fail it (a full disk, a closed gateway).
            log.warning("AI gateway: could not record a call of %r", provider, exc_info=True)

    def _count(self, call: Call) -> None:
        counters = self._counters.setdefault(call.provider, dict.fromkeys(COUNTERS, 0))
        counters["calls"] += 1
        counters["texts"] += call.texts
        counters["cache_hits"] += call.cached
        counters["cache_misses"] += call.texts - call.cached
        counters["errors"] += call.error is not None

    def _assemble(
        self, embedder: Embedder, hashes: list[bytes], cached: Mapping[bytes, bytes], fresh: Mapping[bytes, Vectors]
    ) -> Vectors:
        # A call answered from the cache alone, before this process heard the provider: the
        # size is that of the stored vectors.
        stored = len(next(iter(cached.values()), b"")) // 4
        dims = next((v.shape[0] for v in fresh.values()), 0) or embedder.dims or stored
        out = np.empty((len(hashes), dims), dtype=np.float32)
        for row, h in enumerate(hashes):
            out[row] = fresh[h] if h in fresh else np.frombuffer(cached[h], dtype="<f4")
        return out


def _checked(embedder: Embedder, vectors: Any, count: int) -> Vectors:
    """The provider's vectors, refused unless (count, dims) and finite; re-normalised (cheap, and idempotent)."""
    array = np.asarray(vectors, dtype=np.float32)
    dims = embedder.dims or (array.shape[1] if array.ndim == 2 else 0)
    if array.shape != (count, dims) or dims == 0:
        raise _upstream(embedder, f"returned an array of shape {array.shape} for {count} texts of {dims} dims")
    if not np.isfinite(array).all():
        raise _upstream(embedder, "returned vectors with NaN or infinite values")
    return normalise(array)


def _upstream(embedder: Embedder, reason: str) -> UpstreamError:
    message = f"The embedding provider {embedder.name!r} (model {embedder.model!r}) failed: {reason}."
    return UpstreamError(message, details={"provider": embedder.name, "reason": reason})


def _describe(error: BaseException | None) -> tuple[str | None, str | None]:
    if error is None:
        return None, None
    if isinstance(error, NanoTypeDBError):
        reason = error.details.get("reason") if isinstance(error.details, dict) else None
        return error.code, reason or error.message
    return "InternalError", type(error).__name__


def _with_ratio(counters: Mapping[str, int]) -> dict[str, Any]:
    looked_up = counters["cache_hits"] + counters["cache_misses"]
    return {**counters, "hit_ratio": round(counters["cache_hits"] / looked_up, 4) if looked_up else 0.0}
