"""Arm choice is a pure function: unit tests with hand-built candidates."""

from __future__ import annotations

import pytest

from router.errors import BudgetExceeded, NoFeasibleArm
from router.policy.choose import Candidate, Constraints, choose_arm, utility


def cand(
    arm: str,
    p: float,
    cost: int,
    reserved: int | None = None,
    latency: float = 100.0,
    fits: bool = True,
) -> Candidate:
    return Candidate(
        arm, p, cost, reserved if reserved is not None else cost * 2, latency, 256, fits
    )


CHEAP = cand("local-7b/greedy", 0.60, 20)
MID = cand("mid-32b/greedy", 0.80, 300)
BEST = cand("premium/greedy", 0.92, 4000)
ALL = [CHEAP, MID, BEST]


def test_lambda_zero_buys_the_best_quality() -> None:
    assert choose_arm(ALL, Constraints(lambda_per_usd=0.0), tenant="t").arm == "premium/greedy"


def test_huge_lambda_buys_the_cheapest() -> None:
    assert choose_arm(ALL, Constraints(lambda_per_usd=1e6), tenant="t").arm == "local-7b/greedy"


def test_middle_lambda_trades_off() -> None:
    # utilities at λ=100/USD: 0.598, 0.77, 0.52
    choice = choose_arm(ALL, Constraints(lambda_per_usd=100.0), tenant="t")
    assert choice.arm == "mid-32b/greedy"
    assert choice.utility == pytest.approx(utility(MID, 100.0))


def test_hints_exclude_arms_with_reasons() -> None:
    k = Constraints(lambda_per_usd=0.0, max_cost_micros=1000)
    choice = choose_arm(ALL, k, tenant="t")
    assert choice.arm == "mid-32b/greedy"
    assert "max_cost_usd" in choice.excluded["premium/greedy"]


def test_min_quality_and_latency() -> None:
    slow_best = cand("premium/greedy", 0.92, 4000, latency=5000)
    k = Constraints(lambda_per_usd=1e6, min_quality=0.7, max_latency_ms=1000)
    choice = choose_arm([CHEAP, MID, slow_best], k, tenant="t")
    assert choice.arm == "mid-32b/greedy"
    assert "min_quality" in choice.excluded["local-7b/greedy"]
    assert "latency" in choice.excluded["premium/greedy"]


def test_context_window_excludes_long_prompts() -> None:
    short_ctx = cand("local-7b/greedy", 0.99, 1, fits=False)
    choice = choose_arm([short_ctx, MID], Constraints(lambda_per_usd=1e6), tenant="t")
    assert choice.arm == "mid-32b/greedy"
    assert "context window" in choice.excluded["local-7b/greedy"]


def test_budget_moves_tenant_to_cheaper_arm() -> None:
    k = Constraints(lambda_per_usd=0.0, remaining_micros=700)
    assert choose_arm(ALL, k, tenant="t").arm == "mid-32b/greedy"


def test_no_budget_left_is_budget_exceeded_with_quota_detail() -> None:
    k = Constraints(lambda_per_usd=0.0, remaining_micros=10)
    with pytest.raises(BudgetExceeded) as info:
        choose_arm(ALL, k, tenant="acme")
    assert "acme" in info.value.message
    assert info.value.violations and info.value.violations[0].subject == "tenant:acme"


def test_hints_that_exclude_everything_say_why() -> None:
    with pytest.raises(NoFeasibleArm, match="min_quality"):
        choose_arm(ALL, Constraints(lambda_per_usd=0.0, min_quality=0.99), tenant="t")


def test_ties_break_to_cheaper_then_name() -> None:
    a = cand("b-tier/greedy", 0.5, 0)
    b = cand("a-tier/greedy", 0.5, 0)
    assert choose_arm([a, b], Constraints(lambda_per_usd=0.0), tenant="t").arm == "a-tier/greedy"


def test_no_candidates() -> None:
    with pytest.raises(NoFeasibleArm):
        choose_arm([], Constraints(lambda_per_usd=1.0), tenant="t")
