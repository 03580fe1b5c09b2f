"""vote@k: majority, deterministic ties, early stopping, cancellation charges, options."""

from __future__ import annotations

from typing import Any

import pytest

from router.core.protocols import Backend
from router.core.types import StrategyResult
from router.errors import BackendError, InvalidRequest
from router.strategies import parse_strategy
from router.strategies.base import RunContext
from router.strategies.sampling import estimate_tokens
from router.strategies.vote import Vote, majority, p_majority
from tests.unit.test_sampling import SLOW, FakeSampler


class Emitted:
    def __init__(self) -> None:
        self.texts: list[str] = []

    async def __call__(self, text: str) -> None:
        self.texts.append(text)


async def run_vote(
    name: str, backend: Backend, options: dict[str, Any] | None = None
) -> tuple[StrategyResult, list[str]]:
    strategy = parse_strategy(name, options or {})
    emitted = Emitted()
    result = await strategy.run(
        RunContext(
            backend=backend, prompt="What is 6*7?", max_tokens=64, timeout_s=None, emit=emitted
        )
    )
    return result, emitted.texts


def cot(answer: str, pad: int = 0) -> str:
    return f"Let me think{'.' * pad} so the answer is {answer}"


# ---- majority ---------------------------------------------------------------------------
async def test_majority_wins_and_is_emitted_once() -> None:
    texts = [cot("7"), cot("42"), cot("42", 3), cot("9"), cot("42", 5)]
    backend = FakeSampler(texts, delays=[0.01, 0.02, 0.03, 0.04, 0.05])
    result, emitted = await run_vote("vote@5", backend, {"early_stop": "none"})
    assert result.answer == cot("42")  # the lowest-numbered sample with the winning answer
    assert emitted == [result.answer]
    assert result.samples == 5
    assert result.input_tokens == 50
    assert result.output_tokens == sum(backend.output_tokens(s) for s in range(5))
    assert not result.usage_estimated
    assert result.detail == {
        "votes": 3,
        "agreement": 0.6,
        "answered": 5,
        "stopped_early": False,
        "extractor": "auto",
        "samples_cancelled": 0,
    }


@pytest.mark.parametrize("max_n", [1, 8])
async def test_ties_go_to_the_lowest_numbered_sample_whatever_finishes_first(max_n: int) -> None:
    # "3" (samples 1, 2) finishes first, "5" (samples 0, 3) last; 2-2: sample 0 decides.
    texts = [cot("5"), cot("3"), cot("3"), cot("5")]
    backend = FakeSampler(texts, delays=[0.05, 0.01, 0.02, 0.04], max_n=max_n)
    result, _ = await run_vote("vote@4", backend, {"early_stop": "none"})
    assert result.answer == cot("5")
    assert result.detail["votes"] == 2 and result.detail["agreement"] == 0.5


async def test_samples_without_an_answer_do_not_vote() -> None:
    texts = ["I am unsure.", "Answer: (B)", "Hmm, no idea", "The answer is B", "Answer: C"]
    backend = FakeSampler(texts)
    result, _ = await run_vote("vote@5", backend, {"extractor": "choice", "early_stop": "none"})
    assert result.answer == "Answer: (B)"
    assert result.detail["answered"] == 3
    assert result.detail["agreement"] == pytest.approx(2 / 3, abs=1e-6)
    assert result.detail["extractor"] == "choice"


async def test_with_no_answer_at_all_the_first_sample_is_returned() -> None:
    backend = FakeSampler(["no idea", "none of these", "skip"], delays=[0.03, 0.01, 0.02])
    result, _ = await run_vote("vote@3", backend, {"extractor": "choice"})
    assert result.answer == "no idea"
    assert result.detail["votes"] == 0 and result.detail["agreement"] == 0.0


@pytest.mark.parametrize("early_stop", ["none", "decided", "adaptive"])
async def test_n_per_request_and_one_request_per_sample_agree(early_stop: str) -> None:
    texts = [cot(a) for a in ["42", "7", "42", "42", "7", "42", "9", "42"]]
    delays = [0.01 * (i + 1) for i in range(8)]
    single = FakeSampler(texts, delays=delays)
    batched = FakeSampler(texts, delays=delays, max_n=8)
    a, _ = await run_vote("vote@8", single, {"early_stop": early_stop})
    b, _ = await run_vote("vote@8", batched, {"early_stop": early_stop})
    # A vote that may stop early sends one request per sample even where n > 1 is possible:
    # a multi-choice response reports usage only once every choice is done.
    assert len(single.requests) == 8
    assert len(batched.requests) == (1 if early_stop == "none" else 8)
    assert a.answer == b.answer == cot("42")
    assert a.detail == b.detail
    assert (a.input_tokens, a.output_tokens) == (b.input_tokens, b.output_tokens)


# ---- early stopping ---------------------------------------------------------------------
async def test_decided_stops_after_5_of_8_identical_and_cancels_the_rest() -> None:
    text = cot("42", 40)
    backend = FakeSampler([text] * 8, delays=[0.01] * 5 + [SLOW] * 3, chunks=8)
    result, emitted = await run_vote("vote@8", backend)  # early_stop defaults to decided
    assert emitted == [text]
    assert sorted(backend.finished) == [0, 1, 2, 3, 4]
    assert sorted(backend.cancelled) == [5, 6, 7]
    assert result.detail["stopped_early"] is True
    assert result.detail["votes"] == 5 and result.detail["samples_cancelled"] == 3
    assert result.samples == 8
    produced = sum(estimate_tokens(backend.streamed.get(s, 0)) for s in (5, 6, 7))
    assert 0 < produced < 3 * backend.output_tokens(5)
    assert result.output_tokens == 5 * backend.output_tokens(0) + produced
    assert result.input_tokens == 8 * 10
    assert result.usage_estimated


async def test_decided_does_not_stop_while_the_leader_can_be_caught() -> None:
    texts = [cot("42")] * 4 + [cot("7")] * 4
    backend = FakeSampler(texts, delays=[0.01 * (i + 1) for i in range(8)])
    result, _ = await run_vote("vote@8", backend)
    assert len(backend.finished) == 8 and backend.cancelled == []
    assert result.detail["stopped_early"] is False
    assert result.answer == cot("42")  # 4-4: sample 0 decides


async def test_adaptive_stops_after_3_of_8_at_confidence_090() -> None:
    text = cot("42", 40)
    backend = FakeSampler([text] * 8, delays=[0.01, 0.02, 0.03] + [SLOW] * 5, chunks=8)
    result, _ = await run_vote("vote@8", backend, {"early_stop": "adaptive", "confidence": 0.9})
    assert sorted(backend.finished) == [0, 1, 2]
    assert sorted(backend.cancelled) == [3, 4, 5, 6, 7]
    assert result.detail["answered"] == 3 and result.detail["stopped_early"] is True
    assert result.detail["samples_cancelled"] == 5
    full = backend.output_tokens(0)
    for s in range(3, 8):  # each cancelled sample had streamed only its first delta
        assert 0 < backend.streamed[s] < len(text)
    produced = sum(estimate_tokens(backend.streamed[s]) for s in range(3, 8))
    assert result.output_tokens == 3 * full + produced
    assert result.output_tokens < 8 * full


async def test_adaptive_default_confidence_needs_a_fourth_agreeing_sample() -> None:
    backend = FakeSampler([cot("42")] * 8, delays=[0.01, 0.02, 0.03, 0.04] + [0.2] * 4)
    result, _ = await run_vote("vote@8", backend, {"early_stop": "adaptive"})
    assert result.detail["answered"] == 4
    assert sorted(backend.cancelled) == [4, 5, 6, 7]


async def test_adaptive_keeps_going_while_answers_disagree() -> None:
    texts = [cot(a) for a in ["1", "2", "3", "1", "2", "1"]]
    backend = FakeSampler(texts, delays=[0.01 * (i + 1) for i in range(6)])
    result, _ = await run_vote("vote@6", backend, {"early_stop": "adaptive", "confidence": 0.9})
    assert result.detail["stopped_early"] is False and len(backend.finished) == 6
    assert result.answer == cot("1") and result.detail["votes"] == 3


async def test_min_samples_delays_an_adaptive_stop() -> None:
    backend = FakeSampler([cot("42")] * 8, delays=[0.01 * (i + 1) for i in range(8)])
    result, _ = await run_vote(
        "vote@8", backend, {"early_stop": "adaptive", "confidence": 0.9, "min_samples": 6}
    )
    assert result.detail["answered"] == 6


async def test_parallel_with_early_stop_never_sends_the_samples_it_does_not_need() -> None:
    backend = FakeSampler([cot("42")] * 8, delays=[0.01] * 8)
    result, _ = await run_vote("vote@8", backend, {"parallel": 1})
    assert backend.started == [0, 1, 2, 3, 4]
    assert backend.cancelled == []
    assert result.samples == 5 and result.detail["samples_cancelled"] == 0
    assert not result.usage_estimated


def test_p_majority_is_the_beta_posterior() -> None:
    assert p_majority(0, 0) == 0.5
    assert p_majority(2, 0) == 0.875
    assert p_majority(3, 0) == 0.9375
    assert p_majority(4, 0) == pytest.approx(31 / 32)
    assert p_majority(3, 3) == pytest.approx(0.5)
    assert p_majority(5, 3) < p_majority(5, 1) < p_majority(6, 1)


# ---- failures and options ---------------------------------------------------------------
async def test_a_failed_sample_fails_the_vote() -> None:
    backend = FakeSampler([cot("42")] * 3, delays=[0.01, 0.02, SLOW], fail_at={1: 3})
    with pytest.raises(BackendError, match="sample 1 broke"):
        await run_vote("vote@3", backend, {"early_stop": "none"})
    assert backend.cancelled == [2]


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("vote", {}, "sample count"),
        ("vote@1", {}, "sample count"),
        ("vote@65", {}, "sample count"),
        ("vote@5", {"foo": 1}, "no option 'foo'"),
        ("vote@5", {"extractor": "nope"}, "option 'extractor'"),
        ("vote@5", {"extractor": 3}, "option 'extractor'"),
        ("vote@5", {"early_stop": "maybe"}, "option 'early_stop'"),
        ("vote@5", {"early_stop": True}, "option 'early_stop'"),
        ("vote@5", {"early_stop": "adaptive", "confidence": 1.5}, "option 'confidence'"),
        ("vote@5", {"early_stop": "adaptive", "confidence": 0.5}, "option 'confidence'"),
        ("vote@5", {"early_stop": "adaptive", "confidence": "high"}, "option 'confidence'"),
        ("vote@5", {"confidence": 0.9}, "option 'confidence'"),
        ("vote@5", {"min_samples": 0}, "option 'min_samples'"),
        ("vote@5", {"min_samples": 6}, "option 'min_samples'"),
        ("vote@5", {"parallel": 0}, "option 'parallel'"),
        ("vote@5", {"parallel": 6}, "option 'parallel'"),
        ("vote@5", {"parallel": 2.0}, "option 'parallel'"),
    ],
)
def test_bad_options_are_invalid_requests_naming_the_option(
    name: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_strategy(name, options)


def test_good_options_are_kept() -> None:
    strategy = parse_strategy(
        "vote@8",
        {
            "extractor": "json:answer",
            "early_stop": "adaptive",
            "confidence": 0.9,
            "min_samples": 3,
            "parallel": 4,
        },
    )
    assert isinstance(strategy, Vote) and strategy.name == "vote@8" and strategy.samples == 8
    s = strategy.settings
    assert (s.extractor, s.early_stop, s.confidence, s.min_samples, s.parallel) == (
        "json:answer",
        "adaptive",
        0.9,
        3,
        4,
    )


def test_majority_helper() -> None:
    assert majority(["1", "2", "2", "1"]) == 0
    assert majority([None, "2", "3", "3"]) == 2
    assert majority([None, None]) == 0
    with pytest.raises(ValueError):
        majority([])


async def test_a_failed_sample_fails_the_vote_but_its_siblings_tokens_are_reported() -> None:
    """Samples 0 and 1 finish, sample 2 breaks mid-stream: the vote fails, and the error
    carries every output token produced so far, so the core charges the real spend."""
    from router.errors import BackendError

    text = cot("42", 40)
    backend = FakeSampler([text] * 3, delays=[0.01, 0.02, 0.5], fail_at={2: 4}, chunks=8)
    with pytest.raises(BackendError) as info:
        await run_vote("vote@3", backend, {"early_stop": "none"})
    finished = backend.output_tokens(0) + backend.output_tokens(1)
    assert info.value.partial_output_tokens >= finished > 0
