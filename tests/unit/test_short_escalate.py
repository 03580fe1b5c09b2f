"""short@k (majority of the first m to finish) and escalate@k (vote, then a stronger arm)."""

from __future__ import annotations

from typing import Any

import pytest

from router.config.backends import BackendsConfig
from router.core.catalog import Catalog
from router.core.protocols import Backend
from router.core.service import sum_cost
from router.core.types import Price, StrategyResult, TierUsage
from router.errors import BackendTimeout, BackendUnavailable, ConfigError, InvalidRequest
from router.strategies import parse_strategy
from router.strategies.base import RunContext
from router.strategies.escalate import Escalate, merge_usage
from router.strategies.sampling import estimate_tokens
from router.strategies.short import Short
from router.strategies.vote import Vote
from tests.unit.fakes import ScriptedBackend
from tests.unit.test_sampling import SLOW, FakeSampler

BIG_TEXT = "Carefully: 6 * 7 = 42"
PRICES = {"cheap": Price(0.1, 0.2), "big": Price(2.5, 10.0)}


class Emitted:
    def __init__(self) -> None:
        self.texts: list[str] = []

    async def __call__(self, text: str) -> None:
        self.texts.append(text)


async def run(
    name: str,
    options: dict[str, Any],
    backend: Backend,
    others: dict[str, Backend] | None = None,
    timeout_s: float | None = None,
) -> tuple[StrategyResult, list[str]]:
    strategy = parse_strategy(name, options)
    emitted = Emitted()
    ctx = RunContext(
        backend=backend,
        prompt="What is 6*7?",
        max_tokens=64,
        timeout_s=timeout_s,
        emit=emitted,
        backends={backend.tier: backend, **(others or {})},
    )
    return await strategy.run(ctx), emitted.texts


def said(answer: str) -> str:
    return f"Working it out, the answer is {answer}"


def spread(n: int, step: float = 0.01) -> list[float]:
    return [step * (i + 1) for i in range(n)]


# ---- short@k ----------------------------------------------------------------------------
async def test_short_takes_the_majority_of_the_first_m_and_cancels_the_rest() -> None:
    # All five would vote "7" (3-2); the three quickest say "42" twice.
    texts = [said("7"), said("42"), said("7"), said("42"), said("7")]
    backend = FakeSampler(texts, delays=[SLOW, 0.01, 0.02, 0.03, SLOW], chunks=6)
    result, emitted = await run("short@5", {}, backend)  # m defaults to ceil(5/2) = 3
    assert result.answer == said("42") and emitted == [said("42")]
    assert sorted(backend.cancelled) == [0, 4]
    assert result.detail["m"] == 3 and result.detail["answered"] == 3
    assert result.detail["stopped_early"] is True and result.detail["samples_cancelled"] == 2
    produced = sum(estimate_tokens(backend.streamed.get(s, 0)) for s in (0, 4))
    assert produced > 0
    assert result.output_tokens == 3 * backend.output_tokens(1) + produced
    assert result.input_tokens == 50 and result.samples == 5 and result.usage_estimated


async def test_short_ties_go_to_the_answer_that_finished_first() -> None:
    texts = [said("3"), said("5"), said("7"), said("9")]
    backend = FakeSampler(texts, delays=[0.2, SLOW, SLOW, 0.01])
    result, _ = await run("short@4", {"m": 2}, backend)
    assert result.answer == said("9")  # sample 3 finished first; vote@k would pick sample 0


async def test_short_counts_only_samples_that_gave_an_answer() -> None:
    texts = ["no idea", "Answer: B", "Answer: C", "Answer: B", "Answer: C"]
    backend = FakeSampler(texts, delays=[0.01, 0.02, 0.03, 0.04, SLOW])
    result, _ = await run("short@5", {"m": 3, "extractor": "choice"}, backend)
    assert result.answer == "Answer: B"
    assert result.detail["answered"] == 3
    assert backend.cancelled == [4]


def test_short_default_m_and_options() -> None:
    s8 = parse_strategy("short@8")
    assert isinstance(s8, Short) and s8.m == 4 and s8.samples == 8 and s8.name == "short@8"
    s3 = parse_strategy("short@3")
    assert isinstance(s3, Short) and s3.m == 2


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("short", {}, "sample count"),
        ("short@4", {"m": 0}, "option 'm'"),
        ("short@4", {"m": 5}, "option 'm'"),
        ("short@4", {"m": "2"}, "option 'm'"),
        ("short@4", {"extractor": "nope"}, "option 'extractor'"),
        ("short@4", {"early_stop": "none"}, "no option 'early_stop'"),
    ],
)
def test_short_bad_options(name: str, options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_strategy(name, options)


# ---- escalate@k -------------------------------------------------------------------------
async def test_escalate_keeps_a_confident_cheap_answer() -> None:
    cheap = FakeSampler([said("42")] * 5)
    big = ScriptedBackend("big", BIG_TEXT)
    result, emitted = await run(
        "escalate@5", {"to": "big/greedy", "early_stop": "none"}, cheap, {"big": big}
    )
    assert big.requests == []
    assert result.answer == said("42") and emitted == [said("42")]
    assert result.detail["escalated"] is False and result.detail["agreement"] == 1.0
    assert result.usage == (TierUsage("cheap", 50, 5 * cheap.output_tokens(0), 5),)
    assert (result.input_tokens, result.samples) == (50, 5)


async def test_escalate_hands_a_split_vote_to_the_big_arm_and_charges_both_tiers() -> None:
    cheap = FakeSampler([said(str(i)) for i in range(5)], delays=spread(5))
    big = ScriptedBackend("big", BIG_TEXT)
    result, emitted = await run(
        "escalate@5", {"to": "big/greedy", "early_stop": "none"}, cheap, {"big": big}
    )
    assert len(big.requests) == 1 and big.requests[0].temperature == 0.0
    assert result.answer == BIG_TEXT
    assert "".join(emitted) == BIG_TEXT  # only the final answer is emitted (streamed by greedy)
    assert result.detail["escalated"] is True and result.detail["agreement"] == 0.2
    assert result.detail["to"] == "big/greedy"
    cheap_out = sum(cheap.output_tokens(s) for s in range(5))
    assert result.usage == (
        TierUsage("cheap", 50, cheap_out, 5),
        TierUsage("big", 10, len(BIG_TEXT.split()), 1),
    )
    assert result.input_tokens == 60
    assert result.output_tokens == cheap_out + len(BIG_TEXT.split())
    assert result.samples == 6


@pytest.mark.parametrize(("threshold", "escalated"), [(0.6, False), (0.61, True), (0, False)])
async def test_escalate_iff_agreement_is_below_threshold(threshold: float, escalated: bool) -> None:
    cheap = FakeSampler([said(a) for a in ["1", "1", "2", "1", "3"]], delays=spread(5))
    big = ScriptedBackend("big", BIG_TEXT)
    options = {"to": "big/greedy", "threshold": threshold, "early_stop": "none"}
    result, _ = await run("escalate@5", options, cheap, {"big": big})
    assert result.detail["agreement"] == 0.6
    assert result.detail["escalated"] is escalated
    assert (len(big.requests) == 1) is escalated
    assert len(result.usage) == (2 if escalated else 1)


async def test_escalate_stops_the_cheap_vote_once_escalation_is_certain() -> None:
    # After four different answers of five, agreement can reach at most 2/5 < 0.6.
    cheap = FakeSampler([said(str(i)) for i in range(5)], delays=[*spread(4), SLOW])
    big = ScriptedBackend("big", BIG_TEXT)
    result, _ = await run("escalate@5", {"to": "big/greedy"}, cheap, {"big": big})
    assert cheap.cancelled == [4]
    assert result.detail["escalated"] is True and result.detail["stopped_early"] is True
    assert result.answer == BIG_TEXT


async def test_escalate_stops_the_cheap_vote_once_keeping_it_is_certain() -> None:
    # Three of five agree: the leader holds at least 3/5 = threshold whatever comes.
    cheap = FakeSampler([said("42")] * 3 + [said("1")] * 2, delays=[*spread(3), SLOW, SLOW])
    big = ScriptedBackend("big", BIG_TEXT)
    result, _ = await run("escalate@5", {"to": "big/greedy"}, cheap, {"big": big})
    assert sorted(cheap.cancelled) == [3, 4]
    assert result.detail["escalated"] is False and big.requests == []


async def test_escalate_decided_waits_while_the_decision_is_open() -> None:
    # 2 of 3 agree with 2 outstanding: final agreement could be 2/5 or 4/5.
    texts = [said("42"), said("1"), said("42"), said("1"), said("1")]
    cheap = FakeSampler(texts, delays=spread(5))
    big = ScriptedBackend("big", BIG_TEXT)
    result, _ = await run("escalate@5", {"to": "big/greedy"}, cheap, {"big": big})
    assert len(cheap.finished) == 5
    assert result.detail["agreement"] == 0.6 and result.detail["escalated"] is False
    assert result.answer == said("1")


async def test_escalate_to_a_vote_with_its_own_options() -> None:
    cheap = FakeSampler([said(str(i)) for i in range(3)])
    big = FakeSampler([said("42")] * 3, tier="big", input_tokens=20)
    options = {"to": "big/vote@3", "to_options": {"early_stop": "none"}, "early_stop": "none"}
    result, emitted = await run("escalate@3", options, cheap, {"big": big})
    assert result.answer == said("42") and emitted == [said("42")]
    assert [u.tier for u in result.usage] == ["cheap", "big"]
    assert result.usage[1].input_tokens == 60 and result.usage[1].samples == 3
    assert result.detail["to_votes"] == 3 and result.detail["to_stopped_early"] is False


async def test_escalate_fails_clearly_without_the_target_backend_or_time() -> None:
    split = [said(str(i)) for i in range(3)]
    with pytest.raises(BackendUnavailable, match="'big'"):
        await run("escalate@3", {"to": "big/greedy"}, FakeSampler(split))
    slow = FakeSampler(split, delays=[0.05] * 3)
    with pytest.raises(BackendTimeout, match="no time left to escalate"):
        await run(
            "escalate@3",
            {"to": "big/greedy"},
            slow,
            {"big": ScriptedBackend("big")},
            timeout_s=0.02,
        )


def test_escalate_tiers_and_reservation() -> None:
    strategy = parse_strategy("escalate@5", {"to": "big/greedy"})
    assert isinstance(strategy, Escalate) and strategy.name == "escalate@5"
    assert strategy.tiers_used("cheap") == ("cheap", "big")
    assert strategy.tiers_used("big") == ("big",)
    cheap, big = PRICES["cheap"], PRICES["big"]
    got = strategy.reservation_micros("cheap", PRICES.__getitem__, 100, 50)
    assert got == 5 * cheap.micros(100, 50) + big.micros(100, 50)
    to_vote = parse_strategy("escalate@4", {"to": "big/vote@3"})
    assert isinstance(to_vote, Escalate) and isinstance(to_vote.to, Vote)
    got = to_vote.reservation_micros("cheap", PRICES.__getitem__, 100, 50)
    assert got == 4 * cheap.micros(100, 50) + 3 * big.micros(100, 50)


def test_escalate_is_charged_at_each_tiers_price_by_the_core() -> None:
    cfg = BackendsConfig.model_validate(
        {
            "tiers": {
                "cheap": {
                    "protocol": "triton",
                    "endpoint": "x:1",
                    "model": "s",
                    "price": {"input_per_mtok": 0.1, "output_per_mtok": 0.2},
                },
                "big": {
                    "protocol": "openai",
                    "endpoint": "http://x",
                    "model": "b",
                    "price": {"input_per_mtok": 2.5, "output_per_mtok": 10.0},
                },
            },
            "arms": ["cheap/escalate@5", "big/greedy"],
            "strategy_options": {"cheap/escalate@5": {"to": "big/greedy", "threshold": 0.8}},
        }
    )
    catalog = Catalog.build(cfg, ["cheap/escalate@5", "big/greedy"])
    spec = catalog.get("cheap/escalate@5")
    usage = (TierUsage("cheap", 500, 300, 5), TierUsage("big", 100, 40, 1))
    result = StrategyResult("42", 600, 340, 6, usage=usage)
    want = PRICES["cheap"].micros(500, 300) + PRICES["big"].micros(100, 40)
    assert sum_cost(spec, result, catalog.price_of) == want
    cfg_bad = cfg.model_copy(
        update={"strategy_options": {"cheap/escalate@5": {"to": "huge/greedy"}}}
    )
    with pytest.raises(ConfigError, match="'huge'"):
        Catalog.build(cfg_bad, ["cheap/escalate@5", "big/greedy"])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "needs option 'to'"),
        ({"to": "big"}, "option 'to'"),
        ({"to": "big/unknown"}, "option 'to'.*unknown strategy"),
        ({"to": "big/greedy", "to_options": {"x": 1}}, "option 'to'.*no option 'x'"),
        ({"to": "big/greedy", "to_options": "fast"}, "option 'to_options'"),
        ({"to": "big/greedy", "threshold": 1.5}, "option 'threshold'"),
        ({"to": "big/greedy", "threshold": "high"}, "option 'threshold'"),
        ({"to": "big/greedy", "extractor": "nope"}, "option 'extractor'"),
        ({"to": "big/greedy", "early_stop": "never"}, "option 'early_stop'"),
        ({"to": 7}, "option 'to'"),
        ({"to": "big/greedy", "m": 2}, "no option 'm'"),
    ],
)
def test_escalate_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        parse_strategy("escalate@5", options)


def test_merge_usage_sums_per_tier_in_first_use_order() -> None:
    merged = merge_usage(
        (
            TierUsage("a", 1, 2, 1),
            TierUsage("b", 10, 20, 2, True),
            TierUsage("a", 100, 200, 3),
        )
    )
    assert merged == (TierUsage("a", 101, 202, 4), TierUsage("b", 10, 20, 2, True))
