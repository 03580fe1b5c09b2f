"""The ``Embedder`` protocol over a synchronous batch embedder, batching concurrent requests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from classifier.embedder.runtime import OnnxEmbedder
from router.core.microbatch import BatcherStats, MicroBatcher


class SyncBatchEmbedder(Protocol):
    """What the micro-batcher drives: ``OnnxEmbedder`` or ``classifier.long_prompts``'s
    ``PromptEmbedder`` (head and tail of long prompts, as offline training embeds them)."""

    @property
    def dim(self) -> int: ...

    def embed_batch(self, texts: Sequence[str]) -> NDArray[np.float32]: ...


class BatchedEmbedder:
    """``await embed(text)`` from many requests; one ONNX run per micro-batch.

    Implements ``router.core.protocols.Embedder``.
    """

    def __init__(
        self,
        embedder: SyncBatchEmbedder,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        max_pending: int | None = None,
    ) -> None:
        self._embedder = embedder
        self._batcher: MicroBatcher[str, NDArray[np.float32]] = MicroBatcher(
            self._embed_rows,
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            max_pending=max_pending,
        )

    @classmethod
    def load(
        cls,
        cache_dir: Path | None = None,
        *,
        threads: int | None = None,
        quantized: bool = False,
        spin: bool = False,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        max_pending: int | None = None,
    ) -> BatchedEmbedder:
        """Open the cached ONNX embedder (exporting it if needed) behind a micro-batcher."""
        onnx = OnnxEmbedder.load(cache_dir, threads=threads, quantized=quantized, spin=spin)
        return cls(onnx, max_batch=max_batch, max_wait_ms=max_wait_ms, max_pending=max_pending)

    @property
    def dim(self) -> int:
        return self._embedder.dim

    @property
    def stats(self) -> BatcherStats:
        return self._batcher.stats

    async def embed(self, text: str) -> NDArray[np.float32]:
        """Unit-length float32 vector of shape (dim,)."""
        return await self._batcher.submit(text)

    async def aclose(self) -> None:
        await self._batcher.aclose()

    def _embed_rows(self, texts: list[str]) -> list[NDArray[np.float32]]:
        matrix = self._embedder.embed_batch(texts)
        return [row.copy() for row in matrix]
