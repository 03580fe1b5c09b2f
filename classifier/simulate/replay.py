"""Replay test-time-compute strategies on stored samples: one outcome per prompt x arm.

Arms, for each tier ``T`` (the first listed tier escalates to the last); names follow the
service, whose default early stop is ``decided``:

* ``T/greedy``: the first stored sample;
* ``T/vote@k``: majority over k samples with early stop ``decided``;
  ``T/vote-none@k`` and ``T/vote-adaptive@k``: the same vote with early stop ``none`` or
  ``adaptive`` (see :mod:`classifier.simulate.rules`); only the samples read are paid for;
* ``T/escalate-a<NN>@k`` (and ``escalate-none-a<NN>@k``, ``escalate-adaptive-a<NN>@k``):
  the service's ``escalate@k`` with ``threshold`` NN/100 and ``to`` the last tier's
  ``greedy``: a vote on the first tier, and when the winner holds less than NN% of the
  answering samples, the last tier's greedy answer instead; both tiers' calls are paid for.

Votes read the samples in seeded random orders: ``permutations`` orders per (prompt,
tier), drawn from ``seed``, the prompt id and the tier, and shared by every ``k``, rule and
cascade, so a larger vote extends a smaller one. An arm's score, cost, tokens and samples
for a prompt are the means over those orders. Every call is charged the prompt's input
tokens and its sample's output tokens at the tier's prices; a stopped vote pays nothing
for the samples it did not read (the service also pays for what cancelled samples had
produced).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from classifier.outcomes_io import OutcomeRecord
from classifier.simulate.rules import (
    DEFAULT_CONFIDENCE,
    DEFAULT_RULE,
    EarlyStop,
    VoteRun,
    escalate_stop,
    run_vote,
    vote_stop,
)
from classifier.simulate.samples import PromptSamples, Sample, TierSamples
from router.core.types import Arm, Price
from router.errors import InvalidRequest
from router.strategies.vote import StopRule

Progress = Callable[[str, float], None]
ArmKind = Literal["greedy", "vote", "escalate"]
MIN_K, MAX_K = 2, 64


@dataclass(frozen=True)
class SimulationConfig:
    """What to replay: vote sizes, early-stop rules, escalation thresholds, orders."""

    ks: tuple[int, ...] = (3, 5, 9, 15, 24)
    rules: tuple[EarlyStop, ...] = ("none", "decided", "adaptive")
    confidence: float = DEFAULT_CONFIDENCE
    thresholds: tuple[float, ...] = (0.6,)
    permutations: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [k for k in self.ks if not MIN_K <= k <= MAX_K]
        if bad or not self.ks:
            raise InvalidRequest(f"vote sizes must be {MIN_K}..{MAX_K}, got {list(self.ks)}")
        if not self.rules:
            raise InvalidRequest("give at least one early-stop rule")
        if not 0.5 < self.confidence < 1.0:
            raise InvalidRequest(f"confidence must be in (0.5, 1), got {self.confidence}")
        if any(not 0.0 < t <= 1.0 for t in self.thresholds):
            raise InvalidRequest(
                f"agreement thresholds must be in (0, 1], got {list(self.thresholds)}"
            )
        if any(abs(t * 100 - round(t * 100)) > 1e-6 for t in self.thresholds):
            raise InvalidRequest(
                f"agreement thresholds are whole percentages (steps of 0.01), "
                f"got {list(self.thresholds)}"
            )
        if self.permutations < 1:
            raise InvalidRequest("permutations must be at least 1")


@dataclass(frozen=True)
class ArmPlan:
    """One simulated arm and how it is replayed."""

    arm: str
    tier: str
    kind: ArmKind
    k: int = 1
    rule: EarlyStop = "none"
    threshold: float | None = None
    to_tier: str | None = None

    @property
    def description(self) -> str:
        if self.kind == "greedy":
            return "first sample"
        if self.kind == "vote":
            return f"majority of {self.k}, early stop {self.rule}"
        assert self.threshold is not None
        stop = "" if self.rule == DEFAULT_RULE else f" (early stop {self.rule})"
        return (
            f"vote of {self.k}{stop}, then {self.to_tier}/greedy if agreement < {self.threshold:g}"
        )


@dataclass(frozen=True)
class SimulatedOutcome:
    """An outcome record plus the mean samples used (both tiers for a cascade), the
    unrounded mean tokens, and for a cascade how often it escalated."""

    record: OutcomeRecord
    samples: float
    input_tokens: float
    output_tokens: float
    escalated: float | None = None

    def to_json(self) -> dict[str, object]:
        out = self.record.to_json()
        out["samples"] = round(self.samples, 6)
        return out


@dataclass(frozen=True)
class ArmSummary:
    """Means over the prompts of one arm."""

    plan: ArmPlan
    prompts: int
    accuracy: float
    samples: float
    cost_usd: float
    input_tokens: float
    output_tokens: float
    escalated: float | None

    def to_json(self) -> dict[str, object]:
        p = self.plan
        return {
            "arm": p.arm,
            "tier": p.tier,
            "strategy": p.kind,
            "k": p.k,
            "early_stop": p.rule if p.kind != "greedy" else None,
            "threshold": p.threshold,
            "escalate_to": p.to_tier,
            "description": p.description,
            "prompts": self.prompts,
            "accuracy": self.accuracy,
            "samples": self.samples,
            "cost_usd": self.cost_usd,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "escalated": self.escalated,
        }


@dataclass
class Simulation:
    """The outcome of every (prompt, arm), the per-arm means, and what was left out."""

    outcomes: list[SimulatedOutcome]
    summary: list[ArmSummary]
    prompts: int
    dropped_prompts: int
    samples_per_tier: dict[str, int]
    skipped_arms: list[str] = field(default_factory=list)


def arm_name(kind: ArmKind, tier: str, k: int, rule: EarlyStop, threshold: float | None) -> str:
    """``tier/greedy``, ``tier/vote@k``, ``tier/vote-<rule>@k``, ``tier/escalate-a<NN>@k``
    or ``tier/escalate-<rule>-a<NN>@k``; the service's default rule is left out."""
    if kind == "greedy":
        return f"{tier}/greedy"
    rule_part = "" if rule == DEFAULT_RULE else f"-{rule}"
    if kind == "vote":
        return f"{tier}/vote{rule_part}@{k}"
    assert threshold is not None
    return f"{tier}/escalate{rule_part}-a{round(threshold * 100)}@{k}"


def select_prompts(
    prompts: Sequence[PromptSamples], tiers: Sequence[str]
) -> tuple[list[PromptSamples], int, dict[str, int]]:
    """(kept prompts, dropped count, samples per prompt of each tier).

    A tier's sample count is the most common one among the prompts that have every tier
    (the larger on a tie); prompts with fewer samples in some tier, or missing a tier, are
    dropped so that every arm is replayed on the same prompts.
    """
    have_all = [p for p in prompts if all(t in p.tiers for t in tiers)]
    sizes: dict[str, int] = {}
    for t in tiers:
        counts = Counter(len(p.tiers[t].samples) for p in have_all)
        sizes[t] = max(counts, key=lambda n: (counts[n], n)) if counts else 0
    kept = [p for p in have_all if all(len(p.tiers[t].samples) >= sizes[t] > 0 for t in tiers)]
    return kept, len(prompts) - len(kept), sizes


def plan_arms(
    tiers: Sequence[str], sizes: Mapping[str, int], config: SimulationConfig
) -> tuple[list[ArmPlan], list[str]]:
    """(arms to replay, notes on arms skipped because a tier has too few samples)."""
    plans: list[ArmPlan] = []
    skipped: list[str] = []
    for t in tiers:
        plans.append(ArmPlan(arm_name("greedy", t, 1, "none", None), t, "greedy"))
        for k in config.ks:
            if k > sizes[t]:
                skipped.append(f"{t}/vote@{k}: {t} has {sizes[t]} samples per prompt")
                continue
            for rule in config.rules:
                plans.append(ArmPlan(arm_name("vote", t, k, rule, None), t, "vote", k, rule))
    if len(tiers) >= 2:
        low, high = tiers[0], tiers[-1]
        for k in config.ks:
            if k > sizes[low]:
                continue
            for th in config.thresholds:
                for rule in config.rules:
                    name = arm_name("escalate", low, k, rule, th)
                    plans.append(ArmPlan(name, low, "escalate", k, rule, th, high))
    return plans, skipped


def orders(n: int, count: int, seed: int, prompt_id: str, tier: str) -> list[list[int]]:
    """``count`` seeded random orders of ``n`` samples (the same for the same inputs)."""
    rng = random.Random(f"{seed}\x1f{tier}\x1f{prompt_id}")
    out: list[list[int]] = []
    for _ in range(count):
        order = list(range(n))
        rng.shuffle(order)
        out.append(order)
    return out


@dataclass(frozen=True)
class Replay:
    """One run of a strategy on one prompt: its score, samples read and tokens."""

    score: float
    samples: int
    input_tokens: int
    output_tokens: int


def replay_vote(
    tier: TierSamples, order: Sequence[int], k: int, stop: StopRule | None
) -> tuple[Replay, VoteRun]:
    """A vote of ``k`` reading the samples in ``order`` until ``stop``; (replay, vote)."""
    seq: list[Sample] = [tier.samples[i] for i in order[:k]]
    run = run_vote([s.answer for s in seq], k, stop)
    used = seq[: run.samples]
    replay = Replay(
        score=used[run.winner].score,
        samples=run.samples,
        input_tokens=run.samples * tier.input_tokens,
        output_tokens=sum(s.output_tokens for s in used),
    )
    return replay, run


def replay_greedy(tier: TierSamples) -> Replay:
    first = tier.samples[0]
    return Replay(first.score, 1, tier.input_tokens, first.output_tokens)


def _cost(price: Price, input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * price.input_per_mtok + output_tokens * price.output_per_mtok) / 1e6


@dataclass
class _Acc:
    score: float = 0.0
    samples: float = 0.0
    cost: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    escalated: float = 0.0
    runs: int = 0

    def add(self, r: Replay, cost: float, escalated: bool = False) -> None:
        self.score += r.score
        self.samples += r.samples
        self.cost += cost
        self.input_tokens += r.input_tokens
        self.output_tokens += r.output_tokens
        self.escalated += float(escalated)
        self.runs += 1


def stop_rules(plans: Sequence[ArmPlan], config: SimulationConfig) -> dict[str, StopRule | None]:
    """The service's stop test of every vote and cascade arm."""
    out: dict[str, StopRule | None] = {}
    for plan in plans:
        if plan.kind == "vote":
            out[plan.arm] = vote_stop(plan.k, plan.rule, config.confidence)
        elif plan.kind == "escalate":
            assert plan.threshold is not None and plan.to_tier is not None
            out[plan.arm] = escalate_stop(
                plan.k, plan.rule, plan.threshold, config.confidence, plan.to_tier
            )
    return out


def _replay_prompt(
    p: PromptSamples,
    plans: Sequence[ArmPlan],
    stops: Mapping[str, StopRule | None],
    prices: Mapping[str, Price],
    config: SimulationConfig,
) -> dict[str, _Acc]:
    accs = {plan.arm: _Acc() for plan in plans}
    perms = {
        t: orders(len(ts.samples), config.permutations, config.seed, p.prompt_id, t)
        for t, ts in p.tiers.items()
    }
    greedy = {t: replay_greedy(ts) for t, ts in p.tiers.items()}
    for plan in plans:
        acc = accs[plan.arm]
        tier, price = p.tiers[plan.tier], prices[plan.tier]
        if plan.kind == "greedy":
            g = greedy[plan.tier]
            acc.add(g, _cost(price, g.input_tokens, g.output_tokens))
            continue
        for order in perms[plan.tier]:
            r, run = replay_vote(tier, order, plan.k, stops[plan.arm])
            cost = _cost(price, r.input_tokens, r.output_tokens)
            if plan.kind == "vote":
                acc.add(r, cost)
                continue
            assert plan.to_tier is not None and plan.threshold is not None
            if run.agreement >= plan.threshold:
                acc.add(r, cost)
                continue
            g = greedy[plan.to_tier]
            both = Replay(
                g.score,
                r.samples + g.samples,
                r.input_tokens + g.input_tokens,
                r.output_tokens + g.output_tokens,
            )
            acc.add(both, cost + _cost(prices[plan.to_tier], g.input_tokens, g.output_tokens), True)
    return accs


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _summarise(plan: ArmPlan, outs: Sequence[SimulatedOutcome]) -> ArmSummary:
    return ArmSummary(
        plan=plan,
        prompts=len(outs),
        accuracy=_mean([o.record.score for o in outs]),
        samples=_mean([o.samples for o in outs]),
        cost_usd=_mean([o.record.cost_usd for o in outs]),
        input_tokens=_mean([o.input_tokens for o in outs]),
        output_tokens=_mean([o.output_tokens for o in outs]),
        escalated=_mean([o.escalated or 0.0 for o in outs]) if plan.kind == "escalate" else None,
    )


def simulate(
    prompts: Sequence[PromptSamples],
    *,
    tiers: Sequence[str],
    prices: Mapping[str, Price],
    config: SimulationConfig | None = None,
    models: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> Simulation:
    """Replay every planned arm on every prompt that has samples for all ``tiers``.

    ``tiers`` are in escalation order (the first escalates to the last); ``prices`` are
    per tier; ``models`` (tier → model name) is copied into the records.
    """
    cfg = config or SimulationConfig()
    tiers = list(tiers)
    if not tiers:
        raise InvalidRequest("no tiers to simulate")
    if len(set(tiers)) != len(tiers):
        raise InvalidRequest(f"tiers repeat: {tiers}")
    for t in tiers:
        Arm.parse(f"{t}/greedy")
    missing = [t for t in tiers if t not in prices]
    if missing:
        raise InvalidRequest(f"no prices given for tier(s) {missing} (give --prices tier=in/out)")
    kept, dropped, sizes = select_prompts(prompts, tiers)
    if not kept:
        raise InvalidRequest(f"no prompt has samples for every tier ({', '.join(tiers)})")
    plans, skipped = plan_arms(tiers, sizes, cfg)
    stops = stop_rules(plans, cfg)
    outcomes: list[SimulatedOutcome] = []
    by_arm: dict[str, list[SimulatedOutcome]] = {plan.arm: [] for plan in plans}
    for i, p in enumerate(kept):
        accs = _replay_prompt(p, plans, stops, prices, cfg)
        for plan in plans:
            acc = accs[plan.arm]
            n = acc.runs
            record = OutcomeRecord(
                prompt_id=p.prompt_id,
                prompt=p.prompt,
                arm=plan.arm,
                score=min(max(acc.score / n, 0.0), 1.0),
                cost_usd=acc.cost / n,
                task=p.task,
                input_tokens=round(acc.input_tokens / n),
                output_tokens=round(acc.output_tokens / n),
                model=None if models is None else models.get(plan.tier),
            )
            escalated = acc.escalated / n if plan.kind == "escalate" else None
            out = SimulatedOutcome(
                record, acc.samples / n, acc.input_tokens / n, acc.output_tokens / n, escalated
            )
            outcomes.append(out)
            by_arm[plan.arm].append(out)
        if progress is not None and (i % 20 == 19 or i == len(kept) - 1):
            progress(f"{i + 1}/{len(kept)} prompts", (i + 1) / len(kept))
    summary = [_summarise(plan, by_arm[plan.arm]) for plan in plans]
    n_p = len(kept)
    return Simulation(outcomes, summary, n_p, dropped, sizes, skipped)


__all__ = [
    "ArmPlan",
    "ArmSummary",
    "Replay",
    "SimulatedOutcome",
    "Simulation",
    "SimulationConfig",
    "arm_name",
    "orders",
    "plan_arms",
    "replay_greedy",
    "replay_vote",
    "select_prompts",
    "simulate",
    "stop_rules",
]
