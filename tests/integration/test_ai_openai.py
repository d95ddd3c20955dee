"""OpenAICompatible against a real misbehaving server on 127.0.0.1: each failure is an UpstreamError, then recovery."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
from _misbehaving import MisbehavingProvider

from nanotypedb.ai import OpenAICompatible, normalise
from nanotypedb.errors import UpstreamError

KEY = "sk-test-0123456789"


@pytest.fixture
def provider() -> Iterator[MisbehavingProvider]:
    with MisbehavingProvider(dims=8, api_key=KEY, hang=3.0) as running:
        yield running


def embed(embedder: OpenAICompatible, texts: list[str]) -> np.ndarray:
    async def main() -> np.ndarray:
        try:
            return await embedder.embed(texts)
        finally:
            await embedder.aclose()

    return asyncio.run(main())


def failure(embedder: OpenAICompatible, texts: list[str]) -> UpstreamError:
    with pytest.raises(UpstreamError) as caught:
        embed(embedder, texts)
    error = caught.value
    assert error.code == "UpstreamError" and error.status == 502
    assert error.details["provider"] == "openai"
    assert KEY not in str(error.to_dict())
    return error


def test_embeds_in_order_with_the_bearer_key(provider: MisbehavingProvider) -> None:
    vectors = embed(OpenAICompatible(provider.url, "mini", api_key=KEY, dims=8), ["a", "b", "c"])
    expected = normalise([MisbehavingProvider.vector(t) for t in ["a", "b", "c"]])
    assert vectors.dtype == np.float32 and np.allclose(vectors, expected)
    request = provider.requests[0]
    assert (request.model, request.texts, request.authorization) == ("mini", ["a", "b", "c"], f"Bearer {KEY}")


def test_dims_are_learned_from_the_first_answer(provider: MisbehavingProvider) -> None:
    embedder = OpenAICompatible(provider.url, "mini", api_key=KEY)
    assert embedder.dims == 0
    assert embed(embedder, ["a"]).shape == (1, 8) and embedder.dims == 8


def test_timeout(provider: MisbehavingProvider) -> None:
    provider.script("timeout")
    error = failure(OpenAICompatible(provider.url, "mini", api_key=KEY, timeout=0.3), ["a"])
    assert "timeout" in error.details["reason"] and "status" not in error.details


def test_connection_refused() -> None:
    error = failure(OpenAICompatible(MisbehavingProvider.refused_url(), "mini", timeout=2), ["a"])
    assert "could not reach" in error.details["reason"] and "ConnectError" in error.details["reason"]


def test_server_error(provider: MisbehavingProvider) -> None:
    provider.script("500")
    error = failure(OpenAICompatible(provider.url, "mini", api_key=KEY), ["a"])
    assert error.details["status"] == 500 and "the model crashed" in error.details["reason"]


def test_rate_limited_carries_retry_after(provider: MisbehavingProvider) -> None:
    provider.script("429")
    error = failure(OpenAICompatible(provider.url, "mini", api_key=KEY), ["a"])
    assert error.details["status"] == 429 and error.details["retry_after"] == 2.0
    assert "retry after 2 s" in error.message


def test_wrong_key_is_a_401_without_the_key(provider: MisbehavingProvider) -> None:
    error = failure(OpenAICompatible(provider.url, "mini", api_key="sk-wrong"), ["a"])
    assert error.details["status"] == 401 and "sk-wrong" not in str(error.to_dict())


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("malformed", "malformed answer"), ("wrong_dims", "9 dimensions, expected 8"), ("wrong_count", "1 embeddings")],
)
def test_bad_answers(provider: MisbehavingProvider, mode: str, reason: str) -> None:
    provider.script(mode)
    error = failure(OpenAICompatible(provider.url, "mini", api_key=KEY, dims=8), ["a", "b"])
    assert reason in error.details["reason"]


def test_recovers_after_failures(provider: MisbehavingProvider) -> None:
    provider.script("500", "429", "malformed")
    embedder = OpenAICompatible(provider.url, "mini", api_key=KEY, dims=8)

    async def main() -> list[str]:
        outcomes = []
        for _ in range(4):
            try:
                await embedder.embed(["a"])
                outcomes.append("ok")
            except UpstreamError as exc:
                outcomes.append(str(exc.details.get("status", "bad")))
        await embedder.aclose()
        return outcomes

    assert asyncio.run(main()) == ["500", "429", "bad", "ok"]
    assert provider.count == 4
