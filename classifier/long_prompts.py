"""Prompt embeddings that see both ends of a long prompt.

The embedder reads at most 256 WordPiece tokens, so prompts that share a long few-shot
prefix would all get the prefix's vector. A prompt longer than the window is embedded as
two chunks, its first ``HEAD_TOKENS`` and its last ``TAIL_TOKENS`` tokens (where the
actual question usually sits), and the two unit vectors are combined as
``normalize(HEAD_WEIGHT * head + (1 - HEAD_WEIGHT) * tail)``. A prompt that fits in
``WINDOW_TOKENS`` is embedded whole, exactly as the embedder does it.

The two chunks hold ``WINDOW_TOKENS`` tokens between them, so a long prompt costs about one
full window (attention makes two full windows cost twice as much: 43 against 20 ms for a
3,700-character prompt on 2 cores), and 10,000 long prompts embed in about 3.5 minutes.
The head's 64 tokens keep the instructions a prompt opens with; the tail's 190 hold its
question.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from classifier.embedder.runtime import OnnxEmbedder

#: Content tokens of the embedder's window (256 including [CLS] and [SEP]).
WINDOW_TOKENS = 254
#: Content tokens of a long prompt's two chunks.
HEAD_TOKENS = 64
TAIL_TOKENS = WINDOW_TOKENS - HEAD_TOKENS
HEAD_WEIGHT = 0.35
METHOD = (
    f"prompts over {WINDOW_TOKENS} WordPiece tokens: normalize({HEAD_WEIGHT} * embed(first "
    f"{HEAD_TOKENS} tokens) + {1 - HEAD_WEIGHT:.2f} * embed(last {TAIL_TOKENS} tokens)); "
    "shorter prompts: embed(prompt)"
)


class _Offsets:
    """Token character offsets of a text with the embedder's own tokenizer (no truncation)."""

    def __init__(self) -> None:
        from tokenizers import Tokenizer

        from classifier.features import embedding_model_dir

        tok = Tokenizer.from_file(str(embedding_model_dir() / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        self._tok: Any = tok

    def spans(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        encs = self._tok.encode_batch(list(texts), add_special_tokens=False)
        return [list(e.offsets) for e in encs]


def split_long(text: str, offsets: Sequence[tuple[int, int]]) -> tuple[str, str] | None:
    """(head, tail) texts of a prompt longer than one chunk, else None."""
    if len(offsets) <= WINDOW_TOKENS:
        return None
    head = text[: offsets[HEAD_TOKENS - 1][1]]
    tail = text[offsets[len(offsets) - TAIL_TOKENS][0] :]
    return head, tail


def combine(head: NDArray[np.float32], tail: NDArray[np.float32]) -> NDArray[np.float32]:
    """Unit vectors of ``HEAD_WEIGHT * head + (1 - HEAD_WEIGHT) * tail``, row-wise."""
    mix = HEAD_WEIGHT * head + (1.0 - HEAD_WEIGHT) * tail
    norm = np.linalg.norm(mix, axis=-1, keepdims=True)
    return np.asarray(mix / np.maximum(norm, 1e-12), dtype=np.float32)


class PromptEmbedder:
    """Embeds prompts of any length with an :class:`OnnxEmbedder` (see the module doc)."""

    def __init__(self, embedder: OnnxEmbedder) -> None:
        self._embedder = embedder
        self._offsets = _Offsets()

    @property
    def dim(self) -> int:
        return self._embedder.dim

    def embed_batch(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Unit-length (len(texts), dim) embeddings."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        long_parts: dict[int, tuple[str, str]] = {}
        maybe_long = [i for i, t in enumerate(texts) if len(t) > WINDOW_TOKENS]
        if maybe_long:
            spans = self._offsets.spans([texts[i] for i in maybe_long])
            for i, sp in zip(maybe_long, spans, strict=True):
                parts = split_long(texts[i], sp)
                if parts is not None:
                    long_parts[i] = parts
        # Every distinct chunk is embedded once, heads and tails in one call: prompts that
        # share a long few-shot prefix share their head, so a batch of them costs about one
        # window per prompt instead of two (and repeated prompts cost one window in all).
        chunks: list[str] = []
        slot: dict[str, int] = {}

        def at(chunk: str) -> int:
            j = slot.get(chunk)
            if j is None:
                j = slot[chunk] = len(chunks)
                chunks.append(chunk)
            return j

        firsts = [at(long_parts[i][0] if i in long_parts else t) for i, t in enumerate(texts)]
        idx = sorted(long_parts)
        tails = [at(long_parts[i][1]) for i in idx]
        vectors = self._embedder.embed_batch(chunks)
        out = vectors[firsts]
        if idx:
            out[idx] = combine(out[idx], vectors[tails])
        return np.asarray(out, dtype=np.float32)

    def embed_many(
        self, texts: Sequence[str], *, batch: int = 256, progress: Any = None
    ) -> NDArray[np.float32]:
        """:meth:`embed_batch` in slices of ``batch``; ``progress(n_done)`` after each."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch):
            stop = min(start + batch, len(texts))
            out[start:stop] = self.embed_batch(texts[start:stop])
            if progress is not None:
                progress(stop - start)
        return out


__all__ = [
    "HEAD_TOKENS",
    "HEAD_WEIGHT",
    "METHOD",
    "TAIL_TOKENS",
    "WINDOW_TOKENS",
    "PromptEmbedder",
    "combine",
]
