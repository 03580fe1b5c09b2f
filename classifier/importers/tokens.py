"""The token counter importers take: texts in, one token count per text out."""

from __future__ import annotations

from collections.abc import Callable, Sequence

TokenCount = Callable[[Sequence[str]], list[int]]


def default_counter() -> TokenCount:
    """The embedder's WordPiece tokenizer (loaded on first use)."""
    from classifier.features import default_token_counter

    return default_token_counter().count_batch


__all__ = ["TokenCount", "default_counter"]
