"""Metric definitions checked on cases small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from classifier import metrics as M


def test_brier_by_hand() -> None:
    # (0.9-1)^2 + (0.2-0)^2 + (0.5-1)^2 = 0.01 + 0.04 + 0.25 = 0.30 → mean 0.1
    assert M.brier([0.9, 0.2, 0.5], [1, 0, 1]) == pytest.approx(0.1)


def test_ece_by_hand() -> None:
    # Bin [0.1,0.2): p 0.1, 0.1 vs y 0, 1 → |0.1-0.5| = 0.4, share 2/4.
    # Bin [0.9,1.0]: p 0.9, 1.0 vs y 1, 1 → |0.95-1| = 0.05, share 2/4.
    assert M.ece([0.1, 0.1, 0.9, 1.0], [0, 1, 1, 1]) == pytest.approx(0.5 * 0.4 + 0.5 * 0.05)
    assert M.ece([0.3, 0.3], [0.3, 0.3]) == pytest.approx(0.0)
    assert M.ece([0.0, 1.0], [1.0, 0.0]) == pytest.approx(1.0)


def test_within_factor_and_coverage() -> None:
    # ratios 1.0, 2.0 (in), 0.5 (in), 2.5 (out), 0.25 (out)
    assert M.within_factor([100, 200, 50, 250, 25], [100] * 5) == pytest.approx(0.6)
    assert M.share_at_or_below([10, 20, 30], [10, 25, 5]) == pytest.approx(2 / 3)


# Two prompts, two arms (0 = cheap, 1 = dear). Prompt A: both right. Prompt B: only dear right.
SCORE = np.array([[1.0, 1.0], [0.0, 1.0]])
COST = np.array([[1.0, 3.0], [1.0, 3.0]])


def test_anchors() -> None:
    a = M.anchors(SCORE, COST)
    assert (a.cheap, a.best) == (0, 1)
    assert (a.cost_cheap, a.score_cheap, a.cost_best, a.score_best) == (1.0, 0.5, 3.0, 1.0)


def test_choose_breaks_ties_to_cheaper() -> None:
    p = np.array([[0.7, 0.7], [0.2, 0.9]])
    c = np.array([[1.0, 3.0], [1.0, 3.0]])
    assert M.choose(p, c, 0.0).tolist() == [0, 1]
    # λ = 1: prompt B 0.2-1 = -0.8 vs 0.9-3 = -2.1 → cheap
    assert M.choose(p, c, 1.0).tolist() == [0, 0]


def test_sweep_of_a_perfect_router() -> None:
    p = SCORE.copy()
    curve = M.sweep(p, COST, SCORE, COST, lambdas=[0.0, 0.1, 10.0])
    # λ=0: A→cheap (tie), B→dear: cost 2, score 1. λ=0.1: same. λ=10: all cheap: cost 1, score .5
    assert curve.costs.tolist() == [2.0, 2.0, 1.0]
    assert curve.scores.tolist() == [1.0, 1.0, 0.5]


def test_default_lambda_grid_spans_best_to_cheapest() -> None:
    rng = np.random.default_rng(0)
    p = rng.random((50, 3))
    c = np.tile([1e-5, 2e-4, 3e-3], (50, 1)) * rng.uniform(0.5, 2.0, (50, 3))
    grid = M.lambda_grid(p, c)
    assert grid[0] == 0.0
    assert M.choose(p, c, float(grid[-1])).tolist() == np.argmin(c, axis=1).tolist()
    assert M.choose(p, c, 0.0).tolist() == np.argmax(p, axis=1).tolist()


def test_apgr_by_hand() -> None:
    a = M.anchors(SCORE, COST)
    # One point at cost 2 with score 1: for c in [1, 2) q = 0.5 (floor), for c in [2, 3] q = 1.
    # linspace(1, 3, 100): c >= 2 from index 50 (c = 1 + 2*50/99 ≈ 2.0101) → 50 of 100 points.
    grid = np.linspace(1.0, 3.0, 100)
    expected = float(np.mean(grid >= 2.0))
    assert expected == pytest.approx(0.5)
    assert M.apgr(M.point_curve(2.0, 1.0), a) == pytest.approx(expected)
    # Always cheap: no gain; always best: only the last grid point reaches it.
    assert M.apgr(M.point_curve(1.0, 0.5), a) == 0.0
    assert M.apgr(M.point_curve(3.0, 1.0), a) == pytest.approx(0.01)
    # Random mixing of the two arms: about one half.
    assert M.apgr(M.mixing_curve(a), a) == pytest.approx(0.5, abs=0.01)


def test_apgr_undefined_without_a_gap() -> None:
    a = M.anchors(np.array([[1.0, 1.0]]), np.array([[1.0, 2.0]]))
    assert math.isnan(M.apgr(M.point_curve(1.0, 1.0), a))


def test_cost_at_95_by_hand() -> None:
    a = M.anchors(SCORE, COST)
    curve = M.Curve(np.array([1.0, 1.5, 2.0, 3.0]), np.array([0.5, 0.9, 0.96, 1.0]))
    # 95% of 1.0 = 0.95: first reached at cost 2.0 → 2/3
    assert M.cost_at_quality(curve, a) == pytest.approx(2.0 / 3.0)
    assert M.cost_at_quality(M.point_curve(1.0, 0.5), a) is None


def test_oracle_choice() -> None:
    s = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    c = np.array([[1.0, 2.0, 3.0]] * 3)
    # cheapest among the best: A→0, B→1, C (all zero) → 0
    assert M.oracle_choice(s, c).tolist() == [0, 1, 0]


def test_routing_summary_keys() -> None:
    a = M.anchors(SCORE, COST)
    out = M.routing_summary(M.point_curve(2.0, 1.0), a)
    assert out["cost_at_95"] == pytest.approx(2.0 / 3.0)
    assert out["max_score"] == 1.0
