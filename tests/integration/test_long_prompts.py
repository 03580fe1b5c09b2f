"""Long prompts with a shared few-shot prefix get distinct embeddings (head + tail chunks)."""

from __future__ import annotations

import numpy as np

from classifier.embedder.runtime import OnnxEmbedder
from classifier.long_prompts import (
    HEAD_TOKENS,
    TAIL_TOKENS,
    WINDOW_TOKENS,
    PromptEmbedder,
    combine,
    split_long,
)

PREFIX = "".join(f"Question: What is {i} plus {i + 3}? Answer: {2 * i + 3}.\n" for i in range(120))
QUESTIONS = (
    "Question: A train leaves Paris at noon at 80 km/h; when does it reach Lyon, 400 km away?",
    "Question: Write a Python function that reverses a linked list in place.",
    "Question: Who painted the ceiling of the Sistine Chapel?",
)


def test_shared_prefix_prompts_differ_and_short_prompts_are_unchanged() -> None:
    onnx = OnnxEmbedder.load()
    embedder = PromptEmbedder(onnx)
    prompts = [PREFIX + q for q in QUESTIONS]
    assert all(onnx.count_tokens(p) > 4 * WINDOW_TOKENS for p in prompts)
    plain = onnx.embed_batch(prompts)
    ours = embedder.embed_batch(prompts)
    plain_cos = plain @ plain.T
    ours_cos = ours @ ours.T
    off = ~np.eye(3, dtype=bool)
    assert plain_cos[off].min() > 0.999  # the window sees only the shared prefix
    assert ours_cos[off].max() < 0.95
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    short = ["What is 2 + 2?", QUESTIONS[1]]
    np.testing.assert_allclose(embedder.embed_batch(short), onnx.embed_batch(short), atol=1e-6)


def test_split_long_cuts_on_token_boundaries() -> None:
    text = "word " * 600
    offsets = [(5 * i, 5 * i + 4) for i in range(600)]
    parts = split_long(text, offsets)
    assert parts is not None
    head, tail = parts
    assert head.split() == ["word"] * HEAD_TOKENS
    assert tail.split() == ["word"] * TAIL_TOKENS
    assert HEAD_TOKENS + TAIL_TOKENS == WINDOW_TOKENS
    assert split_long("short", [(0, 5)]) is None
    fits = [(5 * i, 5 * i + 4) for i in range(WINDOW_TOKENS)]
    assert split_long("word " * WINDOW_TOKENS, fits) is None
    one_more = [*fits, (5 * WINDOW_TOKENS, 5 * WINDOW_TOKENS + 4)]
    assert split_long("word " * (WINDOW_TOKENS + 1), one_more) is not None


class _Counting:
    """The real embedder, recording how many chunks each call embeds."""

    def __init__(self, inner: OnnxEmbedder) -> None:
        self.inner = inner
        self.calls: list[int] = []

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed_batch(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        return self.inner.embed_batch(texts)


def test_a_shared_head_and_repeated_prompts_are_embedded_once() -> None:
    onnx = OnnxEmbedder.load()
    counting = _Counting(onnx)
    embedder = PromptEmbedder(counting)  # type: ignore[arg-type]
    prompts = [PREFIX + q for q in QUESTIONS] + [PREFIX + QUESTIONS[0], "What is 2 + 2?"] * 2
    ours = embedder.embed_batch(prompts)
    # one shared head, three distinct tails, one short prompt: 5 chunks for 7 prompts
    assert counting.calls == [5]
    parts = [split_long(p, embedder._offsets.spans([p])[0]) for p in prompts[:3]]
    pairs = [pair for pair in parts if pair is not None]
    assert len(pairs) == 3 and len({head for head, _ in pairs}) == 1
    head = onnx.embed_batch([pairs[0][0]])
    tails = onnx.embed_batch([tail for _, tail in pairs])
    expected = combine(np.repeat(head, 3, axis=0), tails)
    np.testing.assert_allclose(ours[:3], expected, atol=1e-6)
    np.testing.assert_array_equal(ours[3], ours[0])
    np.testing.assert_allclose(ours[4], onnx.embed_batch(["What is 2 + 2?"])[0], atol=1e-6)
    np.testing.assert_array_equal(ours[5], ours[0])
