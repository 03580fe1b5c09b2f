"""LLMRouter and GSM8K-OpenAI importers on the real files in ../shared/data."""

from __future__ import annotations

from collections import Counter

import pytest

from classifier.importers import gsm8k_openai, llmrouter
from classifier.importers.zeroeval import default_data_dir
from router.core.types import Price
from router.errors import InvalidRequest

DATA = default_data_dir()


def _words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def test_llmrouter_nine_models_full_information() -> None:
    recs = llmrouter.import_llmrouter(DATA / "llmrouter", count_tokens=_words)
    arms = Counter(r.arm for r in recs)
    assert len(arms) == 9 and set(arms.values()) == {5608 + 500}
    assert "qwen2.5-7b-instruct/greedy" in arms
    prices = llmrouter.load_prices(DATA / "llmrouter")
    r = next(x for x in recs if x.arm == "llama3-chatqa-1.5-70b/greedy")
    p = prices["llama3-chatqa-1.5-70b"]
    assert r.output_tokens is None and r.input_tokens is not None
    assert r.cost_usd == pytest.approx(
        (r.input_tokens * p.input_per_mtok + 256 * p.output_per_mtok) / 1e6
    )
    scores = {x.score for x in recs}
    assert min(scores) == 0.0 and max(scores) == 1.0
    assert len(scores - {0.0, 1.0}) > 10  # some tasks are graded (e.g. F1-style metrics)
    mean = sum(x.score for x in recs if x.arm == "qwen2.5-7b-instruct/greedy") / 6108
    assert 0.3 < mean < 0.7


def test_llmrouter_selected_models_and_unknown_price() -> None:
    recs = llmrouter.import_llmrouter(
        DATA / "llmrouter",
        models=["gemma-2-9b-it", "llama-3.1-nemotron-51b-instruct"],
        splits=["test"],
        count_tokens=_words,
    )
    assert len(recs) == 1000
    with pytest.raises(InvalidRequest, match=r"no score for model 'nope'|no price"):
        llmrouter.import_llmrouter(
            DATA / "llmrouter", models=["nope"], splits=["test"], count_tokens=_words
        )


def test_gsm8k_openai_two_arms() -> None:
    recs = gsm8k_openai.import_gsm8k_openai(DATA / "gsm8k-openai", count_tokens=_words)
    by_arm = Counter(r.arm for r in recs)
    assert by_arm == {"gpt3-6b/greedy": 1319, "gpt3-175b/greedy": 1319}
    acc = {a: sum(r.score for r in recs if r.arm == a) / 1319 for a in by_arm}
    assert acc["gpt3-175b/greedy"] > acc["gpt3-6b/greedy"]
    assert all(r.output_tokens and r.output_tokens > 0 for r in recs)
    other = gsm8k_openai.import_gsm8k_openai(
        DATA / "gsm8k-openai",
        tiers={"v": "175b_verification"},
        prices={"v": Price(1.0, 1.0)},
        count_tokens=_words,
    )
    assert len(other) == 1319 and other[0].arm == "v/greedy"
    with pytest.raises(InvalidRequest, match="unknown system"):
        gsm8k_openai.import_gsm8k_openai(DATA / "gsm8k-openai", tiers={"v": "7b"})
