"""HashingEmbedder: deterministic vectors from hashed words and character n-grams, for tests. NOT semantic.

Two texts get similar vectors when they share words and letter sequences, never because they mean the same:
"car" and "automobile" are unrelated to it, "bank" (river) and "bank" (money) identical. Use it to test the
plumbing (queues, caches, storage, search mechanics) with no model installed, never to judge search quality.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np

from .embedder import Vectors, normalise

_WORD = re.compile(r"\w+")


class HashingEmbedder:
    """Feature hashing of words (weight 1) and character 3-grams (weight 0.5) into `dims` signed buckets."""

    name = "hashing"

    def __init__(self, dims: int = 384) -> None:
        if dims < 8:
            raise ValueError(f"HashingEmbedder needs at least 8 dims, got {dims}.")
        self.dims = dims
        self.model = f"hashing-{dims}"

    async def embed(self, texts: list[str]) -> Vectors:
        # Cheap enough (tens of microseconds a text) to run on the event loop.
        return self.embed_sync(texts)

    def embed_sync(self, texts: list[str]) -> Vectors:
        """The same vectors without a coroutine, for synchronous tests and tools."""
        vectors = np.zeros((len(texts), self.dims), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature, weight in _features(text):
                index, sign = self._bucket(feature)
                vectors[row, index] += sign * weight
        return normalise(vectors)

    def _bucket(self, feature: str) -> tuple[int, float]:
        # blake2b, not hash(): Python salts str hashes per process, and these vectors must be stable across runs.
        digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
        return digest % self.dims, 1.0 if digest >> 63 else -1.0


def _features(text: str) -> list[tuple[str, float]]:
    words = _WORD.findall(text.lower())
    grams = [f"#{w[i : i + 3]}" for w in (f" {w} " for w in words) for i in range(len(w) - 2)]
    return [(w, 1.0) for w in words] + [(g, 0.5) for g in grams]
