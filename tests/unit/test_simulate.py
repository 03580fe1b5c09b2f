"""Offline replay of greedy, vote@k and escalation on small hand-made sample tables."""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import pytest

from classifier.outcomes_io import read_outcomes
from classifier.simulate.job import load_source, parse_rules, write_simulated
from classifier.simulate.replay import (
    SimulatedOutcome,
    SimulationConfig,
    orders,
    plan_arms,
    replay_vote,
    select_prompts,
    simulate,
)
from classifier.simulate.rules import (
    EARLY_STOP_RULES,
    Answer,
    run_vote,
    samples_used,
    vote_stop,
)
from classifier.simulate.samples import (
    PromptSamples,
    Sample,
    TierSamples,
    answer_key,
    read_samples_jsonl,
)
from router.core.types import Arm, Price
from router.errors import InvalidRequest
from router.strategies.vote import EARLY_STOP_MODES

PRICES = {"cheap": Price(1.0, 2.0), "strong": Price(10.0, 30.0)}


def _tier(answers: list[Answer], gold: str = "a", tokens: list[int] | None = None) -> TierSamples:
    toks = tokens or [10 * (i + 1) for i in range(len(answers))]
    return TierSamples(
        input_tokens=7,
        samples=tuple(Sample(a, float(a == gold), t) for a, t in zip(answers, toks, strict=True)),
    )


def _prompt(pid: str, **tiers: TierSamples) -> PromptSamples:
    return PromptSamples(pid, f"question {pid}", "toy", dict(tiers))


def _words(texts: Sequence[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def _by_arm(outcomes: list[SimulatedOutcome], prompt_id: str) -> dict[str, SimulatedOutcome]:
    return {o.record.arm: o for o in outcomes if o.record.prompt_id == prompt_id}


# --- the vote itself -------------------------------------------------------------------


def test_rules_are_the_services() -> None:
    assert set(EARLY_STOP_RULES) == set(EARLY_STOP_MODES)


@pytest.mark.parametrize(
    ("answers", "winner"),
    [
        (["b", "a"], 0),  # 1-1 tie: the answer seen first
        (["b", "a", "a", "b"], 0),  # 2-2 tie
        (["c", "a", "b", "a"], 1),  # a has two votes
        ([None, "x", None], 1),  # no answer casts no vote
        ([None, None], 0),  # nobody answered: the first sample
    ],
)
def test_majority_and_ties(answers: list[Answer], winner: int) -> None:
    assert run_vote(answers, len(answers), None).winner == winner


def test_agreement_counts_answering_samples_only() -> None:
    run = run_vote(["a", None, "a", "b"], 4, None)
    assert (run.votes, run.answered) == (2, 3)
    assert run.agreement == pytest.approx(2 / 3)
    assert run_vote([None, None], 2, None).agreement == 0.0


def test_decided_never_changes_the_full_vote_answer() -> None:
    rng = random.Random(5)
    alphabet: list[Answer] = ["a", "b", "c", None]
    stopped_early = 0
    for _ in range(3000):
        k = rng.randint(2, 12)
        answers = [rng.choice(alphabet[: rng.randint(1, 4)]) for _ in range(k)]
        full = run_vote(answers, k, None)
        early = run_vote(answers, k, vote_stop(k, "decided"))
        assert answers[early.winner] == answers[full.winner]
        assert early.samples <= k
        stopped_early += early.samples < k
    assert stopped_early > 500


def test_adaptive_stops_earlier_than_decided() -> None:
    unanimous: list[Answer] = ["a"] * 24
    assert samples_used(unanimous, 24, "none") == 24
    assert samples_used(unanimous, 24, "decided") == 13  # 13 > 0 + 11 outstanding
    assert samples_used(unanimous, 24, "adaptive") == 4  # P(Beta(5, 1) > 1/2) = 31/32
    assert samples_used(unanimous, 24, "adaptive", confidence=0.9) == 3
    rng = random.Random(11)
    for _ in range(500):
        answers: list[Answer] = [rng.choice(["a", "a", "b", None]) for _ in range(15)]
        assert samples_used(answers, 15, "adaptive") <= samples_used(answers, 15, "decided")


def test_vote_needs_k_samples() -> None:
    with pytest.raises(InvalidRequest, match="needs 5 samples"):
        run_vote(["a", "b"], 5, None)


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (18, "18"),
        (18.0, "18"),
        ("18", "18"),
        ("25,000", "25000"),
        ("$1,234.50", "1234.5"),
        (28.000000000000004, "28"),
        (-0.0, "0"),
        (0.1 + 0.2, "0.3"),
        (" More  Likely ", "more likely"),
        ("3 minutes", "3 minutes"),
        (True, "true"),
        ("", None),
        (None, None),
        (float("nan"), None),
    ],
)
def test_answer_key(value: object, key: str | None) -> None:
    assert answer_key(value) == key


# --- replay ----------------------------------------------------------------------------


def test_cost_counts_only_the_samples_read() -> None:
    tier = _tier(["a", "a", "a", "b", "c"], tokens=[10, 20, 30, 40, 50])
    replay, run = replay_vote(tier, [0, 1, 2, 3, 4], 5, vote_stop(5, "decided"))
    assert run.samples == 3 and replay.samples == 3
    assert (replay.input_tokens, replay.output_tokens) == (21, 60)
    full, _ = replay_vote(tier, [0, 1, 2, 3, 4], 5, None)
    assert (full.input_tokens, full.output_tokens) == (35, 150)
    assert full.score == replay.score == 1.0

    # Through simulate: one seeded order, recomputed here.
    p = _prompt("q1", cheap=tier)
    cfg = SimulationConfig(ks=(5,), rules=("decided",), permutations=1, seed=3)
    sim = simulate([p], tiers=["cheap"], prices=PRICES, config=cfg)
    order = orders(5, 1, 3, "q1", "cheap")[0]
    answers = [tier.samples[i].answer for i in order]
    n = samples_used(answers, 5, "decided")
    out_tok = sum(tier.samples[i].output_tokens for i in order[:n])
    o = _by_arm(sim.outcomes, "q1")["cheap/vote@5"]
    assert o.samples == n
    assert o.record.cost_usd == pytest.approx((7 * n * 1.0 + out_tok * 2.0) / 1e6)
    assert o.record.output_tokens == out_tok and o.record.input_tokens == 7 * n


def test_greedy_is_the_first_stored_sample() -> None:
    p = _prompt("q", cheap=_tier(["b", "a", "a"], tokens=[5, 6, 7]))
    sim = simulate(
        [p], tiers=["cheap"], prices=PRICES, config=SimulationConfig(ks=(3,), rules=("none",))
    )
    g = _by_arm(sim.outcomes, "q")["cheap/greedy"]
    assert g.record.score == 0.0 and g.samples == 1
    assert g.record.cost_usd == pytest.approx((7 * 1.0 + 5 * 2.0) / 1e6)
    v = _by_arm(sim.outcomes, "q")["cheap/vote-none@3"]
    assert v.record.score == 1.0  # a wins 2-1 in every order


def test_decided_keeps_accuracy_and_saves_samples() -> None:
    rng = random.Random(2)
    prompts = [
        _prompt(f"q{i}", cheap=_tier([rng.choice(["a", "b", "c", None]) for _ in range(9)]))
        for i in range(40)
    ]
    cfg = SimulationConfig(ks=(3, 9), permutations=5, seed=1)
    sim = simulate(prompts, tiers=["cheap"], prices=PRICES, config=cfg)
    arms = {s.plan.arm: s for s in sim.summary}
    for k in (3, 9):
        none, decided = arms[f"cheap/vote-none@{k}"], arms[f"cheap/vote@{k}"]
        adaptive = arms[f"cheap/vote-adaptive@{k}"]
        assert decided.accuracy == pytest.approx(none.accuracy)
        assert decided.samples <= none.samples == k
        assert adaptive.samples <= decided.samples
        assert decided.cost_usd <= none.cost_usd
    for o in sim.outcomes:
        arm = Arm.parse(o.record.arm)
        k = int(arm.strategy.split("@")[1]) if "@" in arm.strategy else 1
        assert 1 <= o.samples <= k


def test_cascade_charges_both_tiers() -> None:
    strong = _tier(["a", "b"], tokens=[100, 1])
    split = _prompt("split", cheap=_tier(["a", "b", "c"], tokens=[1, 2, 3]), strong=strong)
    agree = _prompt("agree", cheap=_tier(["b", "b", "b"], tokens=[1, 2, 3]), strong=strong)
    cfg = SimulationConfig(ks=(3,), rules=("none",), thresholds=(0.6,), permutations=3)
    sim = simulate([split, agree], tiers=["cheap", "strong"], prices=PRICES, config=cfg)
    cheap_cost = (3 * 7 * 1.0 + 6 * 2.0) / 1e6
    strong_cost = (7 * 10.0 + 100 * 30.0) / 1e6

    esc = _by_arm(sim.outcomes, "split")["cheap/escalate-none-a60@3"]
    assert esc.escalated == 1.0 and esc.samples == 4
    assert esc.record.score == 1.0  # the strong tier's first sample is right
    assert esc.record.cost_usd == pytest.approx(cheap_cost + strong_cost)
    assert esc.record.output_tokens == 106 and esc.record.input_tokens == 28

    kept = _by_arm(sim.outcomes, "agree")["cheap/escalate-none-a60@3"]
    assert kept.escalated == 0.0 and kept.samples == 3
    assert kept.record.score == 0.0  # the cheap tier agreed on a wrong answer
    assert kept.record.cost_usd == pytest.approx(cheap_cost)
    summary = {s.plan.arm: s for s in sim.summary}["cheap/escalate-none-a60@3"]
    assert summary.escalated == 0.5 and summary.accuracy == 0.5


def test_cascade_with_decided_decides_as_without() -> None:
    rng = random.Random(9)
    prompts = [
        _prompt(
            f"q{i}",
            cheap=_tier([rng.choice(["a", "b", None]) for _ in range(9)]),
            strong=_tier([rng.choice(["a", "b"])]),
        )
        for i in range(40)
    ]
    cfg = SimulationConfig(ks=(5, 9), thresholds=(0.6, 0.8), permutations=4)
    sim = simulate(prompts, tiers=["cheap", "strong"], prices=PRICES, config=cfg)
    arms = {s.plan.arm: s for s in sim.summary}
    for k in (5, 9):
        for nn in (60, 80):
            none = arms[f"cheap/escalate-none-a{nn}@{k}"]
            decided = arms[f"cheap/escalate-a{nn}@{k}"]
            assert decided.accuracy == pytest.approx(none.accuracy)
            assert decided.escalated == pytest.approx(none.escalated)
            assert decided.samples <= none.samples


def test_orders_are_seeded() -> None:
    assert orders(9, 3, 0, "p", "t") == orders(9, 3, 0, "p", "t")
    assert orders(9, 3, 0, "p", "t") != orders(9, 3, 1, "p", "t")
    assert all(sorted(o) == list(range(9)) for o in orders(9, 3, 0, "p", "t"))


def test_short_prompts_are_dropped_and_large_k_skipped() -> None:
    prompts = [
        _prompt("full", cheap=_tier(["a"] * 3), strong=_tier(["a"])),
        _prompt("also", cheap=_tier(["a"] * 3), strong=_tier(["a"])),
        _prompt("short", cheap=_tier(["a"] * 2), strong=_tier(["a"])),
        _prompt("alone", cheap=_tier(["a"] * 3)),
    ]
    kept, dropped, sizes = select_prompts(prompts, ["cheap", "strong"])
    assert [p.prompt_id for p in kept] == ["full", "also"] and dropped == 2
    assert sizes == {"cheap": 3, "strong": 1}
    plans, skipped = plan_arms(["cheap", "strong"], sizes, SimulationConfig(ks=(3, 5)))
    names = [p.arm for p in plans]
    assert "cheap/vote@3" in names and "cheap/vote@5" not in names
    assert "strong/greedy" in names and not any(n.startswith("strong/vote") for n in names)
    assert any("cheap/vote@5" in s for s in skipped)
    for n in names:
        Arm.parse(n)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ks": (1,)}, "vote sizes must be 2..64"),
        ({"ks": (65,)}, "vote sizes must be 2..64"),
        ({"confidence": 1.0}, "confidence"),
        ({"thresholds": (0.655,)}, "whole percentages"),
        ({"thresholds": (0.0,)}, r"\(0, 1\]"),
        ({"permutations": 0}, "permutations"),
    ],
)
def test_config_is_checked(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        SimulationConfig(**kwargs)  # type: ignore[arg-type]


def test_missing_price_is_an_error() -> None:
    p = _prompt("q", cheap=_tier(["a", "a"]))
    with pytest.raises(InvalidRequest, match=r"no prices given for tier\(s\) \['cheap'\]"):
        simulate([p], tiers=["cheap"], prices={}, config=SimulationConfig(ks=(2,)))


def test_parse_rules() -> None:
    assert parse_rules("decided, none,decided") == ("decided", "none")
    with pytest.raises(InvalidRequest, match="unknown early-stop rule 'soon'"):
        parse_rules("none,soon")


# --- the generic JSONL format ----------------------------------------------------------


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def test_generic_jsonl_reads_answers_text_and_scores(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "s.jsonl",
        [
            {
                "prompt_id": "p1",
                "prompt": "two plus two",
                "tier": "small",
                "gold": 4,
                "samples": [
                    {"answer": "4.0", "output_tokens": 3},
                    {"text": "so it is 5"},
                    {"answer": None, "output_tokens": 9},
                ],
            },
            {
                "prompt_id": "p1",
                "prompt": "two plus two",
                "arm": "big/greedy",
                "input_tokens": 11,
                "samples": [{"answer": "x", "output_tokens": 2, "score": 0.5}],
            },
        ],
    )
    prompts, tiers = read_samples_jsonl(path, count_tokens=_words)
    assert tiers == ["small", "big"]
    (p,) = prompts
    small, big = p.tiers["small"], p.tiers["big"]
    assert small.input_tokens == 3  # counted from the prompt
    assert [s.answer for s in small.samples] == ["4", "5", None]
    assert [s.score for s in small.samples] == [1.0, 0.0, 0.0]
    assert [s.output_tokens for s in small.samples] == [3, 4, 9]  # text counted
    assert big.input_tokens == 11 and big.samples[0].score == 0.5


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "q", "tier": "t", "gold": 1, "samples": [{"answer": 1}]}, "'prompt_id'"),
        ({"prompt_id": "p", "prompt": "q", "gold": 1, "samples": []}, "'tier'"),
        ({"prompt_id": "p", "prompt": "q", "tier": "t", "gold": 1, "samples": []}, "'samples'"),
        (
            {
                "prompt_id": "p",
                "prompt": "q",
                "tier": "t",
                "samples": [{"answer": 1, "output_tokens": 1}],
            },
            "no 'gold'",
        ),
        (
            {"prompt_id": "p", "prompt": "q", "tier": "t", "gold": 1, "samples": [{"answer": 1}]},
            r"samples\[0\] has neither 'output_tokens' nor 'text'",
        ),
        (
            {
                "prompt_id": "p",
                "prompt": "q",
                "tier": "t",
                "samples": [{"answer": 1, "output_tokens": 1, "score": 2}],
            },
            "'score' must be a number in",
        ),
        (
            {"prompt_id": "p", "prompt": "q", "tier": "a b", "gold": 1, "samples": [{}]},
            "not a valid tier name",
        ),
    ],
)
def test_generic_jsonl_errors_name_file_and_line(
    tmp_path: Path, row: dict[str, object], message: str
) -> None:
    ok = {
        "prompt_id": "p0",
        "prompt": "q",
        "tier": "t",
        "gold": 1,
        "samples": [{"answer": 1, "output_tokens": 1}],
    }
    path = _write(tmp_path / "bad.jsonl", [ok, row])
    with pytest.raises(InvalidRequest, match=rf"bad\.jsonl:2: .*{message}"):
        read_samples_jsonl(path, count_tokens=_words)


def test_generic_jsonl_duplicate_prompt_and_tier(tmp_path: Path) -> None:
    row = {
        "prompt_id": "p",
        "prompt": "q",
        "tier": "t",
        "gold": 1,
        "samples": [{"answer": 1, "output_tokens": 1}],
    }
    path = _write(tmp_path / "dup.jsonl", [row, row])
    with pytest.raises(InvalidRequest, match=r"dup\.jsonl:2: prompt 'p' already has samples"):
        read_samples_jsonl(path, count_tokens=_words)


def test_load_source_renames_tiers_and_limits(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = []
    for i in range(5):
        for tier in ("s", "b"):
            rows.append(
                {
                    "prompt_id": f"p{i}",
                    "prompt": f"question {i}",
                    "tier": tier,
                    "gold": "a",
                    "input_tokens": 4,
                    "samples": [{"answer": "a", "output_tokens": 2}] * 3,
                }
            )
    path = _write(tmp_path / "s.jsonl", rows)
    loaded = load_source(str(path), data_dir=tmp_path, tiers={"cheap": "s", "strong": "b"}, limit=3)
    assert loaded.tiers == ["cheap", "strong"]
    assert [p.prompt_id for p in loaded.prompts] == ["p0", "p1", "p2"]
    assert set(loaded.prompts[0].tiers) == {"cheap", "strong"}
    with pytest.raises(InvalidRequest, match=r"no samples of tier\(s\) \['x'\]"):
        load_source(str(path), data_dir=tmp_path, tiers={"cheap": "x"})
    with pytest.raises(InvalidRequest, match="unknown source"):
        load_source(str(tmp_path / "nope.jsonl"), data_dir=tmp_path)


def test_written_records_are_outcome_records(tmp_path: Path) -> None:
    p = _prompt("q", cheap=_tier(["a", "b", "a"]), strong=_tier(["a"]))
    sim = simulate(
        [p],
        tiers=["cheap", "strong"],
        prices=PRICES,
        config=SimulationConfig(ks=(3,), permutations=2),
    )
    out = tmp_path / "r.jsonl"
    assert write_simulated(out, sim.outcomes) == len(sim.outcomes)
    records = read_outcomes(out)
    assert [r.arm for r in records] == [o.record.arm for o in sim.outcomes]
    first = json.loads(out.read_text().splitlines()[0])
    assert first["samples"] == 1.0 and first["arm"] == "cheap/greedy"
    assert {r.arm for r in records} >= {
        "cheap/greedy",
        "cheap/vote@3",
        "cheap/vote-none@3",
        "cheap/vote-adaptive@3",
        "strong/greedy",
        "cheap/escalate-a60@3",
    }
