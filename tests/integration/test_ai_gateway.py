"""AIGateway with a real SQLite file and a real provider on 127.0.0.1: cache, partial hits, log, counters, limits."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from _misbehaving import MisbehavingProvider

from nanotypedb.ai import AIGateway, HashingEmbedder, OpenAICompatible, normalise
from nanotypedb.errors import ConfigError, RateLimited, UpstreamError
from nanotypedb.lib.ratelimit import Rate

T = TypeVar("T")


@pytest.fixture
def provider() -> Iterator[MisbehavingProvider]:
    with MisbehavingProvider(dims=8, hang=3.0) as running:
        yield running


def gateway(path: Path, provider: MisbehavingProvider, **options: object) -> AIGateway:
    embedder = OpenAICompatible(provider.url, "mini", dims=8, timeout=5)
    return AIGateway(path, {"openai": embedder}, **options)  # type: ignore[arg-type]


def run(gw: AIGateway, work: Callable[[AIGateway], Awaitable[T]]) -> T:
    """Run `work(gw)` on a fresh event loop and close the gateway's connections after it."""

    async def main() -> T:
        try:
            return await work(gw)
        finally:
            await gw.aclose()

    return asyncio.run(main())


def test_a_repeated_text_is_answered_from_the_cache(tmp_path: Path, provider: MisbehavingProvider) -> None:
    async def work(gw: AIGateway) -> tuple[np.ndarray, np.ndarray]:
        return await gw.embed("openai", ["hello"]), await gw.embed("openai", ["hello"])

    first, second = run(gateway(tmp_path / "ai.sqlite3", provider), work)
    assert provider.count == 1
    assert np.array_equal(first, second) and np.allclose(first, normalise([MisbehavingProvider.vector("hello")]))


def test_partial_hits_send_only_the_missing_texts_once(tmp_path: Path, provider: MisbehavingProvider) -> None:
    async def work(gw: AIGateway) -> np.ndarray:
        await gw.embed("openai", ["a", "b"])
        return await gw.embed("openai", ["b", "c", "a", "d", "c"])

    vectors = run(gateway(tmp_path / "ai.sqlite3", provider), work)
    assert [r.texts for r in provider.requests] == [["a", "b"], ["c", "d"]]
    assert np.allclose(vectors, normalise([MisbehavingProvider.vector(t) for t in ["b", "c", "a", "d", "c"]]))


def test_the_cache_survives_reopening(tmp_path: Path, provider: MisbehavingProvider) -> None:
    path = tmp_path / "ai.sqlite3"
    first = run(gateway(path, provider), lambda gw: gw.embed("openai", ["x", "y"]))
    again = run(gateway(path, provider), lambda gw: gw.embed("openai", ["y", "x"]))
    assert provider.count == 1 and np.array_equal(first[::-1], again)
    reopened = gateway(path, provider)
    assert reopened.stats()["cache_hits"] == 2 and reopened.stats()["calls"] == 2
    reopened.close()


def test_the_cache_is_per_provider_and_model(tmp_path: Path, provider: MisbehavingProvider) -> None:
    path = tmp_path / "ai.sqlite3"
    run(gateway(path, provider), lambda gw: gw.embed("openai", ["x"]))
    other = AIGateway(path, {"openai": OpenAICompatible(provider.url, "bigger", dims=8)})
    run(other, lambda gw: gw.embed("openai", ["x"]))
    assert [r.model for r in provider.requests] == ["mini", "bigger"]


def test_the_log_and_the_counters(tmp_path: Path, provider: MisbehavingProvider) -> None:
    provider.script("ok", "500")

    async def work(gw: AIGateway) -> None:
        await gw.embed("openai", ["a", "b"])
        await gw.embed("openai", ["a"])
        with pytest.raises(UpstreamError):
            await gw.embed("openai", ["a", "c"])

    gw = gateway(tmp_path / "ai.sqlite3", provider)
    run(gw, work)
    reopened = gateway(tmp_path / "ai.sqlite3", provider)
    calls = asyncio.run(reopened.calls())
    assert [(c.texts, c.cached, c.error) for c in calls] == [(2, 1, "UpstreamError"), (1, 1, None), (2, 0, None)]
    assert calls[0].reason is not None and "HTTP 500" in calls[0].reason
    assert all(c.latency_ms > 0 and c.provider == "openai" and c.model == "mini" for c in calls)
    expected = {"calls": 3, "texts": 5, "cache_hits": 2, "cache_misses": 3, "errors": 1, "hit_ratio": 0.4}
    assert gw.stats() == reopened.stats() == {**expected, "providers": {"openai": expected}}
    reopened.close()


def test_the_log_is_one_sqlite_file_a_dashboard_can_read(tmp_path: Path, provider: MisbehavingProvider) -> None:
    run(gateway(tmp_path / "ai.sqlite3", provider), lambda gw: gw.embed("openai", ["a"]))
    with sqlite3.connect(tmp_path / "ai.sqlite3") as db:
        assert db.execute("SELECT provider, texts, cached, error FROM calls").fetchall() == [("openai", 1, 0, None)]
        assert db.execute("SELECT count(*), sum(length(vector)) FROM embedding_cache").fetchone() == (1, 8 * 4)
    db.close()


def test_the_gateway_timeout_is_an_upstream_error(tmp_path: Path, provider: MisbehavingProvider) -> None:
    provider.script("timeout")
    gw = gateway(tmp_path / "ai.sqlite3", provider, timeout=0.3)
    with pytest.raises(UpstreamError) as caught:
        run(gw, lambda gw: gw.embed("openai", ["slow"]))
    assert "timeout" in caught.value.details["reason"]
    assert gw.stats()["errors"] == 1


def test_recovery_after_failures_fills_the_cache(tmp_path: Path, provider: MisbehavingProvider) -> None:
    provider.script("429", "wrong_dims")

    async def work(gw: AIGateway) -> list[str]:
        outcomes = []
        for _ in range(3):
            try:
                await gw.embed("openai", ["t"])
                outcomes.append("ok")
            except UpstreamError as exc:
                outcomes.append(exc.details["reason"].split(" ")[0])
        await gw.embed("openai", ["t"])
        return outcomes

    assert run(gateway(tmp_path / "ai.sqlite3", provider), work) == ["rate", "embeddings", "ok"]
    assert provider.count == 3  # the fourth call came from the cache


def test_the_rate_limit_waits_within_the_timeout(tmp_path: Path) -> None:
    gw = AIGateway(tmp_path / "ai.sqlite3", {"hashing": HashingEmbedder()}, rates={"hashing": Rate(20.0, 1)})

    async def work(gw: AIGateway) -> float:
        started = time.perf_counter()
        for i in range(4):
            await gw.embed("hashing", [f"text {i}"])
        return time.perf_counter() - started

    elapsed = run(gw, work)
    assert 0.13 <= elapsed < 1.0  # a burst of 1, then one call every 50 ms


def test_the_rate_limit_refuses_past_the_timeout(tmp_path: Path) -> None:
    gw = AIGateway(
        tmp_path / "ai.sqlite3", {"hashing": HashingEmbedder()}, rates={"hashing": Rate(1.0, 2)}, timeout=0.2
    )

    async def work(gw: AIGateway) -> None:
        await gw.embed("hashing", ["a"])
        await gw.embed("hashing", ["b"])
        await gw.embed("hashing", ["a", "b"])  # from the cache: no token needed
        await gw.embed("hashing", ["c"])

    with pytest.raises(RateLimited) as caught:
        run(gw, work)
    assert 0.5 < caught.value.retry_after <= 1.0 and "'hashing'" in caught.value.message
    assert gw.stats()["providers"]["hashing"]["errors"] == 1


def test_the_rate_limit_is_per_provider(tmp_path: Path) -> None:
    embedders = {"slow": HashingEmbedder(), "fast": HashingEmbedder(16)}
    gw = AIGateway(tmp_path / "ai.sqlite3", embedders, rates={"slow": Rate(0.1, 1)}, timeout=0.1)

    async def work(gw: AIGateway) -> None:
        await gw.embed("slow", ["a"])
        for i in range(20):
            await gw.embed("fast", [f"{i}"])
        with pytest.raises(RateLimited):
            await gw.embed("slow", ["b"])

    run(gw, work)


def test_an_unknown_provider_is_a_config_error(tmp_path: Path) -> None:
    gw = AIGateway(tmp_path / "ai.sqlite3", {"hashing": HashingEmbedder()})
    with pytest.raises(ConfigError, match="No embedding provider 'openai' is configured \\(configured: hashing\\)"):
        run(gw, lambda gw: gw.embed("openai", ["a"]))


def test_no_texts_no_call(tmp_path: Path) -> None:
    gw = AIGateway(tmp_path / "ai.sqlite3", {"hashing": HashingEmbedder()})
    assert run(gw, lambda gw: gw.embed("hashing", [])).shape == (0, 384)
    assert gw.stats()["calls"] == 0
