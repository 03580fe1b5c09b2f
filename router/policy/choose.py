"""Arm choice: maximise p_success − λ·expected cost within the request's and tenant's limits,
exploring other eligible arms with a small probability ε.

Exploration (ε-greedy): a request is explored with probability ε; it then runs on an arm
drawn uniformly from the eligible arms other than the greedy one. An arm is eligible when it
passes every limit of the request — allowed, within the hints, fits the context window,
within the per-request cap and the remaining budget — so exploring never breaks a limit.
With ``n`` eligible arms the probability that this policy picks arm ``a`` (the logged
``propensity``) is::

    1 − ε          for the greedy arm (an explored draw never returns it)
    ε / (n − 1)    for each other eligible arm
    1              when only one arm is eligible (nothing to explore)

These sum to 1 over the eligible arms. Pure functions over plain data; no I/O; randomness
comes from the ``random.Random`` the caller passes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from router.errors import BudgetExceeded, NoFeasibleArm, QuotaViolation

MICROS_PER_USD = 1_000_000


@dataclass(frozen=True)
class Candidate:
    """One allowed arm with what it is predicted to deliver and cost for this prompt."""

    arm: str
    p_success: float
    expected_cost_micros: int
    reserved_cost_micros: int
    expected_latency_ms: float
    max_tokens: int
    fits_context: bool = True


@dataclass(frozen=True)
class Constraints:
    lambda_per_usd: float
    remaining_micros: int | None = None
    max_cost_micros: int | None = None
    min_quality: float | None = None
    max_latency_ms: float | None = None


@dataclass(frozen=True)
class Choice:
    """The arm to run. ``propensity`` is the probability that the policy picks this arm for
    this request; ``explored`` is True when it is not the greedy (highest-utility) arm."""

    candidate: Candidate
    utility: float
    excluded: dict[str, str] = field(default_factory=dict)
    propensity: float = 1.0
    explored: bool = False

    @property
    def arm(self) -> str:
        return self.candidate.arm


def utility(c: Candidate, lambda_per_usd: float) -> float:
    return c.p_success - lambda_per_usd * c.expected_cost_micros / MICROS_PER_USD


def _usd(micros: int) -> str:
    return f"${micros / MICROS_PER_USD:.6f}"


def exclusion_reason(c: Candidate, k: Constraints) -> tuple[str, bool] | None:
    """Why ``c`` cannot be chosen (and whether the reason is budget alone), or None."""
    if not c.fits_context:
        return "prompt plus output budget exceeds the tier's context window", False
    if k.max_cost_micros is not None and c.reserved_cost_micros > k.max_cost_micros:
        return (
            f"reserved cost {_usd(c.reserved_cost_micros)} exceeds max_cost_usd "
            f"{_usd(k.max_cost_micros)}",
            False,
        )
    if k.max_latency_ms is not None and c.expected_latency_ms > k.max_latency_ms:
        return (
            f"estimated latency {c.expected_latency_ms:.0f} ms exceeds max_latency_ms "
            f"{k.max_latency_ms:.0f}",
            False,
        )
    if k.min_quality is not None and c.p_success < k.min_quality:
        return (
            f"predicted quality {c.p_success:.3f} is below min_quality {k.min_quality:.3f}",
            False,
        )
    if k.remaining_micros is not None and c.reserved_cost_micros > k.remaining_micros:
        return (
            f"reservation {_usd(c.reserved_cost_micros)} exceeds the remaining budget "
            f"{_usd(k.remaining_micros)}",
            True,
        )
    return None


def propensities(eligible: Sequence[str], greedy: str, epsilon: float) -> dict[str, float]:
    """The probability of each eligible arm under ε-greedy exploration around ``greedy``
    (counted as eligible whether or not ``eligible`` names it); ``epsilon`` is within [0, 1).
    """
    others = [a for a in dict.fromkeys(eligible) if a != greedy]
    if not others:
        return {greedy: 1.0}
    share = epsilon / len(others)
    return {greedy: 1.0 - epsilon, **{a: share for a in others}}


def choose_arm(
    candidates: Sequence[Candidate],
    constraints: Constraints,
    *,
    tenant: str,
    epsilon: float = 0.0,
    rng: random.Random | None = None,
) -> Choice:
    """The feasible candidate with the highest utility (ties: cheaper, then by name), or,
    with probability ``epsilon``, another feasible candidate drawn uniformly (see the module
    docstring for the propensity this reports).

    ``rng`` supplies the randomness (a fresh unseeded one when omitted); with
    ``epsilon == 0`` it is not used. Raises ``BudgetExceeded`` when some arm would be
    feasible but for the remaining budget, and ``NoFeasibleArm`` when the hints exclude
    every arm.
    """
    if not candidates:
        raise NoFeasibleArm("no arm is both configured and allowed for this tenant")
    feasible: list[Candidate] = []
    excluded: dict[str, str] = {}
    budget_only = False
    for c in candidates:
        why = exclusion_reason(c, constraints)
        if why is None:
            feasible.append(c)
        else:
            excluded[c.arm] = why[0]
            budget_only = budget_only or why[1]
    if not feasible:
        if budget_only:
            cheapest = min(
                (c for c in candidates if c.arm in excluded), key=lambda c: c.reserved_cost_micros
            )
            remaining = constraints.remaining_micros or 0
            raise BudgetExceeded(
                f"tenant {tenant!r} has {_usd(remaining)} left, less than the cheapest eligible "
                f"reservation ({cheapest.arm}: {_usd(cheapest.reserved_cost_micros)}); wait for "
                "the budget window to reset or raise the cap",
                [
                    QuotaViolation(
                        subject=f"tenant:{tenant}",
                        description=f"remaining {_usd(remaining)} < reservation "
                        f"{_usd(cheapest.reserved_cost_micros)}",
                    )
                ],
            )
        detail = "; ".join(f"{arm}: {why}" for arm, why in sorted(excluded.items()))
        raise NoFeasibleArm(f"no arm satisfies the request's hints ({detail})")
    lam = constraints.lambda_per_usd
    greedy = min(feasible, key=lambda c: (-utility(c, lam), c.expected_cost_micros, c.arm))
    others = sorted((c for c in feasible if c.arm != greedy.arm), key=lambda c: c.arm)
    if not others:
        return Choice(greedy, utility(greedy, lam), excluded)
    chosen, explored = greedy, False
    if epsilon > 0.0:
        draw = rng if rng is not None else random.Random()
        if draw.random() < epsilon:
            chosen, explored = draw.choice(others), True
    p = propensities([c.arm for c in feasible], greedy.arm, epsilon)[chosen.arm]
    return Choice(chosen, utility(chosen, lam), excluded, p, explored)
