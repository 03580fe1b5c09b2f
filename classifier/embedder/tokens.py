"""WordPiece tokenisation of prompts, truncated the way sentence-transformers does it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from classifier.embedder.model_files import ModelFiles
from router.errors import ModelError

if TYPE_CHECKING:
    from tokenizers import Tokenizer


class PromptTokenizer:
    """Turns prompts into padded ``input_ids`` / ``attention_mask`` arrays (int64).

    Sequences are cut to ``max_tokens`` ids, [CLS] and [SEP] included (longest-first,
    right side), and padded with id 0 to the longest sequence of the batch.
    """

    def __init__(self, truncating: Tokenizer, counting: Tokenizer, max_tokens: int) -> None:
        self._truncating = truncating
        self._counting = counting
        self._max_tokens = max_tokens

    @classmethod
    def load(cls, files: ModelFiles) -> PromptTokenizer:
        from tokenizers import Tokenizer

        path = str(files.tokenizer_json)
        try:
            truncating = Tokenizer.from_file(path)
            counting = Tokenizer.from_file(path)
        except Exception as exc:
            raise ModelError(f"cannot load the embedder tokenizer {path}: {exc}") from exc
        max_tokens = files.max_tokens
        truncating.no_padding()
        truncating.enable_truncation(max_length=max_tokens, strategy="longest_first")
        counting.no_padding()
        counting.no_truncation()
        return cls(truncating, counting, max_tokens)

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Truncated ids of each text, [CLS] and [SEP] included."""
        if len(texts) == 1:
            return [self._truncating.encode(texts[0]).ids]
        return [e.ids for e in self._truncating.encode_batch(list(texts))]

    def encode(self, texts: Sequence[str]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """``(input_ids, attention_mask)``, both of shape (len(texts), longest)."""
        return pad(self.token_ids(texts))

    def count(self, text: str) -> int:
        """WordPiece tokens in ``text``, untruncated, without [CLS]/[SEP]."""
        return len(self._counting.encode(text, add_special_tokens=False).ids)


def pad(sequences: Sequence[Sequence[int]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Right-pad id sequences with 0 to the longest: ``(input_ids, attention_mask)``."""
    longest = max((len(s) for s in sequences), default=0)
    ids = np.zeros((len(sequences), longest), dtype=np.int64)
    mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, seq in enumerate(sequences):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return ids, mask
