"""The AI gateway and its embedding providers: every model call of the server goes through `AIGateway`."""

from .choice import build_embedders, build_rates, default_provider, describe_choice
from .embedder import Embedder, Vectors, normalise
from .gateway import AIGateway
from .hashing import HashingEmbedder
from .local import MiniLM
from .openai import OpenAICompatible
from .store import Call, GatewayStore

__all__ = [
    "AIGateway",
    "Call",
    "Embedder",
    "GatewayStore",
    "HashingEmbedder",
    "MiniLM",
    "OpenAICompatible",
    "Vectors",
    "build_embedders",
    "build_rates",
    "default_provider",
    "describe_choice",
    "normalise",
]
