"""The service's vote and escalation rules, driven by stored answers instead of a backend.

Nothing here restates a rule: the tally, the winner, the early-stop tests and the
escalation test are those of ``router.strategies.vote`` and ``router.strategies.escalate``,
fed one stored answer at a time. Offline, the i-th sample read plays the service's sample
``i`` (seed i): it finishes i-th, and a tie between answers goes to the answer whose first
sample came first. In short:

* the winner is the answer with the most votes; a sample with no answer (``None``) does
  not vote; with no answer at all, the first sample is returned;
* early stop ``none`` reads all k samples; ``decided`` (the service's default) stops once
  the leader is ahead of the runner-up by more than the samples still to come, so it
  always returns the answer all k would give; ``adaptive`` also stops, after at least two
  samples, once ``P(Beta(L+1, O+1) > 1/2) >= confidence`` for L votes for the leader and
  O for other answers;
* ``escalate@k`` escalates when the winner's share of the answering samples is below the
  threshold; with ``decided`` its vote stops as soon as that decision is certain, so it
  decides exactly as ``none`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from router.core.types import Arm, SampleResult
from router.errors import InvalidRequest
from router.strategies.escalate import Escalate
from router.strategies.greedy import Greedy
from router.strategies.vote import (
    StopRule,
    Tally,
    VoteSettings,
    majority,
    p_majority,
)

EarlyStop = Literal["none", "decided", "adaptive"]
EARLY_STOP_RULES: tuple[EarlyStop, ...] = ("none", "decided", "adaptive")
DEFAULT_RULE: EarlyStop = "decided"
DEFAULT_CONFIDENCE = 0.95

Answer = str | None


def parse_rule(name: str) -> EarlyStop:
    """The early-stop rule called ``name``; an unknown name is an ``InvalidRequest``."""
    for rule in EARLY_STOP_RULES:
        if name == rule:
            return rule
    raise InvalidRequest(f"unknown early-stop rule {name!r}; known: {', '.join(EARLY_STOP_RULES)}")


def vote_settings(k: int, rule: EarlyStop, confidence: float = DEFAULT_CONFIDENCE) -> VoteSettings:
    """The service's settings of a ``vote@k`` arm configured with this rule."""
    options: dict[str, object] = {"early_stop": rule}
    if rule == "adaptive":
        options["confidence"] = confidence
    return VoteSettings.from_options("vote", k, options)


def vote_stop(k: int, rule: EarlyStop, confidence: float = DEFAULT_CONFIDENCE) -> StopRule | None:
    """The service's stop test of ``vote@k`` with this rule (None: read all k)."""
    return vote_settings(k, rule, confidence).stop_rule()


def escalate_stop(
    k: int,
    rule: EarlyStop,
    threshold: float,
    confidence: float = DEFAULT_CONFIDENCE,
    to_tier: str = "strong",
) -> StopRule | None:
    """The service's stop test of the vote inside ``escalate@k`` (None: read all k)."""
    settings = vote_settings(k, rule, confidence)
    return Escalate(k, Arm(to_tier, "greedy"), Greedy(), threshold, settings).stop_rule()


@dataclass(frozen=True)
class VoteRun:
    """One offline vote: the winning sample's position, samples read, votes and voters."""

    winner: int
    samples: int
    votes: int
    answered: int

    @property
    def agreement(self) -> float:
        """The winner's share of the answering samples (0 if none answered), as the
        service's ``escalate`` measures it."""
        return self.votes / self.answered if self.answered else 0.0


def run_vote(answers: Sequence[Answer], k: int, stop: StopRule | None) -> VoteRun:
    """Read ``answers`` in order as the service reads finishing samples, until ``stop``.

    ``answers`` must hold at least ``k`` entries; only the first ``k`` can be read.
    """
    if k < 1 or len(answers) < k:
        raise InvalidRequest(f"a vote of {k} needs {k} samples, got {len(answers)}")
    tally = Tally()
    for i in range(k):
        tally.add(answers[i], i, SampleResult(text="", input_tokens=0, output_tokens=0, index=i))
        outstanding = k - tally.finished
        if outstanding > 0 and stop is not None and stop(tally, outstanding):
            break
    return VoteRun(
        winner=tally.winner().index,
        samples=tally.finished,
        votes=tally.leader_votes,
        answered=tally.answered,
    )


def samples_used(
    answers: Sequence[Answer],
    k: int,
    rule: EarlyStop,
    confidence: float = DEFAULT_CONFIDENCE,
) -> int:
    """How many of the first ``k`` answers ``vote@k`` with ``rule`` reads before it stops."""
    return run_vote(answers, k, vote_stop(k, rule, confidence)).samples


__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_RULE",
    "EARLY_STOP_RULES",
    "Answer",
    "EarlyStop",
    "VoteRun",
    "escalate_stop",
    "majority",
    "p_majority",
    "parse_rule",
    "run_vote",
    "samples_used",
    "vote_settings",
    "vote_stop",
]
