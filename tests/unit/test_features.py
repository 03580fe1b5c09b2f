"""Text features: declared order, hand-checked values, batch = single, token counting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from classifier import features as F


def _named(prompt: str, n_tokens: int = 10) -> dict[str, float]:
    return dict(zip(F.TEXT_FEATURE_NAMES, F.text_features(prompt, n_tokens).tolist(), strict=True))


def test_names_and_shape() -> None:
    names = F.feature_names()
    assert len(names) == F.EMBEDDING_DIM + len(F.TEXT_FEATURE_NAMES)
    assert names[:2] == ("emb_000", "emb_001") and names[F.EMBEDDING_DIM - 1] == "emb_383"
    assert names[F.EMBEDDING_DIM :] == F.TEXT_FEATURE_NAMES
    assert len(set(names)) == len(names)
    v = F.text_features("What is 2+2?", 7)
    assert v.dtype == np.float32 and v.shape == (len(F.TEXT_FEATURE_NAMES),)


def test_values_by_hand() -> None:
    prompt = "Add 12 and 3.5?\nThen x=?"  # 24 chars
    f = _named(prompt, 9)
    assert f["log_chars"] == pytest.approx(math.log1p(24))
    assert f["log_tokens"] == pytest.approx(math.log1p(9))
    assert f["log_lines"] == pytest.approx(math.log1p(2))
    assert f["digit_frac"] == pytest.approx(4 / 24)  # 1, 2, 3, 5
    assert f["log_numbers"] == pytest.approx(math.log1p(2))  # "12", "3.5"
    assert f["log_max_number_len"] == pytest.approx(math.log1p(3))
    assert f["log_question_marks"] == pytest.approx(math.log1p(2))
    assert f["log_math_operators"] == pytest.approx(math.log1p(1))  # "="
    assert f["non_ascii_frac"] == 0.0
    assert f["has_code_block"] == 0.0
    assert f["space_frac"] == pytest.approx(5 / 24)
    # whitespace-separated words: Add 12 and 3.5? Then x=? → 6 words, 19 characters
    assert f["log_words"] == pytest.approx(math.log1p(6))
    assert f["mean_word_len"] == pytest.approx(19 / 6)
    assert f["log_code_markers"] == 0.0 and f["log_latex_markers"] == 0.0


def test_code_and_math_markers_separate_prompt_kinds() -> None:
    code = "[PYTHON]\ndef f(x):\n    return x == 3\n[/PYTHON]"
    latex = r"Find $\frac{1}{2} + \sqrt{x}$ where \(x^{2} = 4\)."
    plain = "Tell me about the history of Rome."
    fc, fl, fp = _named(code), _named(latex), _named(plain)
    # def, return, ==, newline+indent, [PYTHON]
    assert fc["log_code_markers"] == pytest.approx(math.log1p(5))
    assert fl["log_code_markers"] == fp["log_code_markers"] == 0.0
    assert fc["has_code_block"] == 1.0
    # \frac, \sqrt, \( plus two $ and one ^{
    assert fl["log_latex_markers"] == pytest.approx(math.log1p(6))
    assert fc["log_latex_markers"] == fp["log_latex_markers"] == 0.0


def test_non_ascii_and_empty_prompt() -> None:
    f = _named("héllo wörld", 4)
    assert f["non_ascii_frac"] == pytest.approx(2 / 11)
    assert f["alpha_frac"] == pytest.approx(10 / 11)
    # Non-ASCII digits, capitals and spaces follow Python's str predicates.
    g = _named("Ä٣\u3000x", 4)  # capital A-umlaut, Arabic-Indic three, ideographic space
    assert (g["digit_frac"], g["alpha_frac"], g["space_frac"]) == pytest.approx((0.25, 0.5, 0.25))
    assert g["upper_frac"] == pytest.approx(0.5) and g["non_ascii_frac"] == pytest.approx(0.75)
    empty = F.text_features("", 0)
    assert np.all(np.isfinite(empty)) and float(empty[0]) == 0.0


def test_batch_equals_single_and_assemble() -> None:
    prompts = ["a", "What is 3 * 4?", "def g():\n    pass"]
    counts = [1, 6, 5]
    batch = F.text_features_batch(prompts, counts)
    for i, (p, c) in enumerate(zip(prompts, counts, strict=True)):
        np.testing.assert_array_equal(batch[i], F.text_features(p, c))
    emb = np.random.default_rng(0).normal(size=(3, F.EMBEDDING_DIM)).astype(np.float32)
    x = F.assemble(emb, batch)
    assert x.shape == (3, len(F.feature_names())) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, : F.EMBEDDING_DIM], emb)
    np.testing.assert_array_equal(x[:, F.EMBEDDING_DIM :], batch)
    with pytest.raises(ValueError):
        F.assemble(emb, batch[:2])


def test_token_counter_is_untruncated_without_special_tokens() -> None:
    tc = F.default_token_counter()
    assert tc.count("hello world") == 2
    long = "word " * 1000
    assert tc.count(long) == 1000  # not cut at the model's 256/512 limit
    assert tc.count_batch(["hello world", long, ""]) == [2, 1000, 0]


def test_features_for_uses_the_counter() -> None:
    emb = np.zeros((2, F.EMBEDDING_DIM), np.float32)
    prompts = ["hello world", "one two three four"]
    x = F.features_for(emb, prompts)
    col = F.EMBEDDING_DIM + F.TEXT_FEATURE_NAMES.index("log_tokens")
    assert x[:, col].tolist() == pytest.approx([math.log1p(2), math.log1p(4)])
    single = F.features_for(emb[:1], prompts[:1])
    np.testing.assert_array_equal(single[0], x[0])


_PLAIN = st.text(
    alphabet=st.sampled_from([chr(i) for i in range(0x20, 0x7F)] + ["\t", "\n", "\r"]),
    max_size=300,
)
_WORDY = st.lists(
    st.sampled_from(
        [
            "the",
            "Tokenization",
            "x^2",
            "3.14159",
            "don't",
            "e.g.",
            "[PYTHON]",
            "def",
            "==",
            "antidisestablishmentarianism",
            "a" * 120,
            "GSM8K",
            "\n    ",
            "$\\frac{1}{2}$",
            "  ",
        ]
    ),
    max_size=60,
).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        _PLAIN, _WORDY, st.text(st.characters(max_codepoint=127), max_size=80), st.text(max_size=80)
    )
)
def test_fast_token_count_equals_the_tokenizer(text: str) -> None:
    tc = F.default_token_counter()
    assert tc.count(text) == tc.count_exact(text)
    assert tc.count_batch([text, "ok"]) == [tc.count_exact(text), 1]
