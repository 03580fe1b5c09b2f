"""The gap mixture: its folding into the stack, the choice of κ, the recalibration."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.gap_blend import (
    GAP_WEIGHTS,
    MIN_PAIRS,
    GapChoice,
    blend,
    choose_gap_weight,
    fold_into_stack,
    gap_error,
    mixed_logits,
    recalibrate,
)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def test_blend_keeps_the_level_and_mixes_the_gaps() -> None:
    s = np.asarray([[1.0, 3.0], [0.0, -2.0]])
    b = np.asarray([[5.0, 1.0], [2.0, 2.0]])
    # levels 2 and -1; own gaps ±1; broad gaps ±2 and 0
    np.testing.assert_allclose(blend(s, b, 1.0), s)
    np.testing.assert_allclose(blend(s, b, 0.0), [[4.0, 0.0], [-1.0, -1.0]])
    np.testing.assert_allclose(blend(s, b, 0.5), [[2.5, 1.5], [-0.5, -1.5]])


def test_gap_error_by_hand_over_observed_pairs_only() -> None:
    p = np.asarray([[0.9, 0.5, 0.1], [0.2, 0.4, 0.6]])
    t = np.asarray([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    have = np.asarray([[True, True, True], [True, True, False]])
    # prompt 0: pairs (0,1) (0.4-1)²=0.36, (0,2) (0.8-1)²=0.04, (1,2) (0.4-0)²=0.16
    # prompt 1: pair (0,1) only: (-0.2+1)²=0.64
    err, n = gap_error(p, t, have)
    assert n == 4
    assert err == pytest.approx((0.36 + 0.04 + 0.16 + 0.64) / 4)


def test_recalibrate_recovers_slope_and_intercept() -> None:
    rng = np.random.default_rng(0)
    m = rng.normal(0, 2, 20000)
    y = (rng.random(m.size) < _sigmoid(0.6 * m - 0.4)).astype(np.int64)
    a, c = recalibrate(m, y, np.ones(m.size))
    assert a == pytest.approx(0.6, abs=0.03)
    assert c == pytest.approx(-0.4, abs=0.05)
    assert recalibrate(m, np.ones(m.size, np.int64), np.ones(m.size)) == (1.0, 0.0)


def _outcomes(score: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """0/1 scores as classification rows, one row per prompt and arm."""
    rows = np.arange(score.shape[0], dtype=np.int64)
    return [(rows, score[:, j].astype(np.int64), np.ones(rows.size)) for j in range(score.shape[1])]


def _world(seed: int, n: int = 3000) -> tuple[np.ndarray, ...]:
    """Two arms; a prompt's level and the true gap between arms; 0/1 outcomes."""
    rng = np.random.default_rng(seed)
    level = rng.normal(0, 1.5, n)
    gap = np.where(rng.random(n) < 0.5, 1.0, -1.0)
    true = np.column_stack([level + gap, level - gap])
    score = (rng.random(true.shape) < _sigmoid(true)).astype(np.float64)
    return rng, level, gap, true, score


def test_noisy_own_gaps_are_replaced_by_the_neighbourhoods() -> None:
    rng, level, gap, _, score = _world(1)
    noise = rng.normal(0, 3, level.size)
    stack = np.column_stack([level + noise, level - noise])  # right level, gaps pure noise
    broad = np.column_stack([gap, -gap]) * 0.8  # the true gaps, a little shrunk
    choice = choose_gap_weight(stack, broad, score, np.ones_like(score, bool), _outcomes(score))
    assert choice.weight == 0.0
    assert set(choice.errors) == set(GAP_WEIGHTS)
    assert choice.errors[0.0] < choice.errors[1.0]
    assert choice.pairs == level.size


def test_sharp_own_gaps_are_kept() -> None:
    rng, level, _, true, score = _world(2)
    noise = rng.normal(0, 3, level.size)
    broad = np.column_stack([noise, -noise])
    choice = choose_gap_weight(true, broad, score, np.ones_like(score, bool), _outcomes(score))
    assert choice.weight == 1.0
    assert choice.slope == pytest.approx([1.0, 1.0], abs=0.1)


def test_without_observed_pairs_the_stack_is_unchanged() -> None:
    _, level, _, true, score = _world(3, n=200)
    have = np.zeros_like(score, bool)
    have[np.arange(level.size), np.arange(level.size) % 2] = True  # one arm per prompt
    choice = choose_gap_weight(true, true, score, have, _outcomes(score))
    assert (choice.weight, choice.slope, choice.pairs) == (1.0, [], 0)
    few = have.copy()
    few[: MIN_PAIRS - 1] = True
    assert choose_gap_weight(true, true, score, few, _outcomes(score)).slope == []
    w, b = np.ones((8, 2)), np.ones(2)
    assert fold_into_stack(w, b, choice, 2) == (w, b)
    one_arm = choose_gap_weight(true[:, :1], true[:, :1], score[:, :1], have[:, :1], [])
    assert one_arm == GapChoice()


@pytest.mark.parametrize(("full", "mixed"), [(0.5, False), (0.85, False), (0.95, True)])
def test_the_mix_needs_most_prompts_to_have_every_arm_observed(full: float, mixed: bool) -> None:
    rng, level, gap, _, score = _world(5)
    noise = rng.normal(0, 3, level.size)
    stack = np.column_stack([level + noise, level - noise])
    broad = np.column_stack([gap, -gap])
    partial = np.arange(level.size) >= int(full * level.size)  # arm 1 unobserved there
    stack[partial, 1] = np.nan
    have = np.ones_like(score, bool)
    have[partial, 1] = False
    outcomes = _outcomes(score)
    rows, y, w = outcomes[1]
    outcomes[1] = (rows[~partial], y[~partial], w[~partial])
    choice = choose_gap_weight(stack, broad, score, have, outcomes)
    assert choice.full_share == pytest.approx(full, abs=1e-3)
    assert choice.pairs == int(full * level.size)
    assert bool(choice.slope) is mixed
    assert (choice.weight < 1.0) is mixed


@pytest.mark.parametrize("weight", [0.0, 0.375, 1.0])
def test_folded_stack_equals_the_recalibrated_mixture(weight: float) -> None:
    rng = np.random.default_rng(4)
    n_learners, a_n = 4, 3
    x = rng.normal(0, 1, (50, n_learners * a_n))
    w = rng.normal(0, 1, (n_learners * a_n, a_n))
    b = rng.normal(0, 1, a_n)
    choice = GapChoice(weight, [0.8, 1.1, 0.95], [0.1, -0.2, 0.05], {}, 100)
    new_w, new_b = fold_into_stack(w, b, choice, 2)
    mixed = blend(x @ w + b, x[:, 2 * a_n : 3 * a_n], weight)
    expected = mixed * np.asarray(choice.slope) + np.asarray(choice.intercept)
    np.testing.assert_allclose(x @ new_w + new_b, expected, atol=1e-12)
    served = mixed_logits(choice, x @ w + b, x[:, 2 * a_n : 3 * a_n])
    np.testing.assert_allclose(served, expected, atol=1e-12)
    unchanged = mixed_logits(GapChoice(), x @ w + b, x[:, 2 * a_n : 3 * a_n])
    np.testing.assert_array_equal(unchanged, x @ w + b)
