"""Prompt embeddings for offline jobs, cached on disk by the texts' digest.

``train``, ``predict`` and ``eval`` embed the same prompt sets again and again; the
vectors of one ordered list of texts are kept in ``<cache>/prompt-embeddings/<sha>.npy``,
where the digest covers the texts, the embedder's ONNX file name (which carries the
weights' digest) and the long-prompt method.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

Progress = Callable[[int], None]


class CachedPromptEmbedder:
    """``embed(texts)`` through :class:`classifier.long_prompts.PromptEmbedder`, cached."""

    def __init__(self, cache_dir: Path | None = None, *, use_cache: bool = True) -> None:
        from classifier.embedder.model_files import default_cache_dir
        from classifier.embedder.runtime import OnnxEmbedder
        from classifier.long_prompts import PromptEmbedder

        self._root = cache_dir if cache_dir is not None else default_cache_dir()
        onnx = OnnxEmbedder.load(self._root)
        self._embedder = PromptEmbedder(onnx)
        self._tag = onnx.model_path.name
        self._use_cache = use_cache

    @property
    def dim(self) -> int:
        return self._embedder.dim

    def _key(self, texts: Sequence[str]) -> str:
        from classifier.long_prompts import METHOD

        h = hashlib.sha256(f"{self._tag}\n{METHOD}\n{len(texts)}\n".encode())
        for t in texts:
            h.update(hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest())
        return h.hexdigest()[:32]

    def embed(self, texts: Sequence[str], progress: Progress | None = None) -> NDArray[np.float32]:
        """(len(texts), dim) unit vectors; ``progress(n)`` reports prompts done."""
        path = self._root / "prompt-embeddings" / f"{self._key(texts)}.npy"
        if self._use_cache and path.is_file():
            try:
                cached = np.load(path)
                if cached.shape == (len(texts), self.dim):
                    if progress is not None:
                        progress(len(texts))
                    return np.asarray(cached, np.float32)
            except (OSError, ValueError):
                pass
        out = self._embedder.embed_many(texts, progress=progress)
        if self._use_cache:
            _save(path, out)
        return out

    def embed_batch(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return self.embed(texts)


def _save(path: Path, array: Any) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array)
        os.replace(name, path)
    except OSError:
        return


__all__ = ["CachedPromptEmbedder"]
