"""Arm choice: maximise p_success − λ·expected cost within the request's and tenant's limits.

Pure functions over plain data; no I/O.
"""

from __future__ import annotations

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
    candidate: Candidate
    utility: float
    excluded: dict[str, str] = field(default_factory=dict)
    propensity: float = 1.0

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


def choose_arm(candidates: Sequence[Candidate], constraints: Constraints, *, tenant: str) -> Choice:
    """The feasible candidate with the highest utility (ties: cheaper, then by name).

    Raises ``BudgetExceeded`` when some arm would be feasible but for the remaining budget,
    and ``NoFeasibleArm`` when the hints exclude every arm.
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
    chosen = min(feasible, key=lambda c: (-utility(c, lam), c.expected_cost_micros, c.arm))
    return Choice(chosen, utility(chosen, lam), excluded)
