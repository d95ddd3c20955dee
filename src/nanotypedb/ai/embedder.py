"""The Embedder protocol every provider implements, and the checks the gateway applies to what one returns."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Vectors = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit vectors: `embed(texts)` returns float32 of shape (len(texts), dims), rows L2-normalised.

    `name` is the provider's name in the gateway (its cache key, rate limit and log), `model` the model it runs
    (also a cache key: another model never reads the vectors of this one), `dims` the length of each vector (0 for
    an OpenAI-compatible endpoint until its first answer, when not configured).
    """

    name: str
    model: str
    dims: int

    async def embed(self, texts: list[str]) -> Vectors: ...


def normalise(vectors: npt.ArrayLike) -> Vectors:
    """Rows scaled to length 1 as float32; an all-zero row stays zero instead of dividing by zero."""
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    out: Vectors = np.divide(array, norms, out=np.zeros_like(array), where=norms > 0)
    return out
