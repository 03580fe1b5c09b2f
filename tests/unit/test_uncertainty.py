"""Chance levels beside held-out figures: ECE of a calibrated model, paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from classifier import metrics as M
from classifier.uncertainty import ece_if_calibrated, paired_bootstrap


def test_calibrated_ece_shrinks_with_more_prompts_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    small = rng.uniform(0.05, 0.95, 200)
    large = rng.uniform(0.05, 0.95, 20_000)
    med_s, p95_s = ece_if_calibrated(small, seed=1)
    _, p95_l = ece_if_calibrated(large, seed=1)
    assert 0.0 < med_s < p95_s
    assert p95_l < med_s / 3  # noise falls about as 1/sqrt(n)
    assert ece_if_calibrated(small, seed=1) == (med_s, p95_s)


def test_calibrated_ece_matches_the_binomial_by_hand() -> None:
    # One bin, p = 0.5 for n prompts: ECE = |mean(y) - 0.5|, whose median for n = 100 is
    # the median of |Binomial(100, 0.5)/100 - 0.5|: P(|k-50| <= 3) = 0.516, so 0.03.
    med, p95 = ece_if_calibrated(np.full(100, 0.5), draws=4000, seed=3)
    assert med == pytest.approx(0.03, abs=0.0051)
    # 95th percentile: |k - 50| <= 10 has probability 0.965, <= 9 has 0.943.
    assert p95 == pytest.approx(0.10, abs=0.0051)


def test_a_miscalibrated_model_lies_above_the_chance_band() -> None:
    rng = np.random.default_rng(2)
    truth = rng.uniform(0.0, 1.0, 2000)
    y = (rng.random(2000) < truth).astype(float)
    over = np.clip(truth + 0.2, 0.0, 1.0)  # over-confident by 0.2
    _, p95 = ece_if_calibrated(over)
    assert M.ece(over, y) > 2 * p95
    _, p95_true = ece_if_calibrated(truth)
    assert M.ece(truth, y) < p95_true


def _table(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cheap = (rng.random(n) < 0.4).astype(float)
    best = np.maximum(cheap, (rng.random(n) < 0.5).astype(float))
    return np.column_stack([cheap, best]), np.tile([1.0, 10.0], (n, 1))


def test_identical_methods_differ_by_nothing() -> None:
    score, cost = _table(120, 0)
    p = np.random.default_rng(1).uniform(size=score.shape)
    out = paired_bootstrap({"router": p, "same": p.copy()}, cost, score, cost, draws=50)
    for key in ("apgr", "cost_at_95"):
        v = out["same"][key]
        assert (v["observed"], v["lo"], v["hi"], v["ahead_share"]) == (0.0, 0.0, 0.0, 0.0)


def test_a_router_that_knows_the_answers_is_ahead_beyond_chance() -> None:
    score, cost = _table(300, 4)
    knows = score + 0.01 * np.random.default_rng(5).normal(size=score.shape)
    guesses = np.random.default_rng(6).uniform(size=score.shape)
    out = paired_bootstrap({"router": knows, "guess": guesses}, cost, score, cost, seed=7)
    apgr, c95 = out["guess"]["apgr"], out["guess"]["cost_at_95"]
    assert apgr["lo"] > 0 and apgr["ahead_share"] == 1.0
    assert c95["hi"] < 0 and c95["ahead_share"] == 1.0
    # The observed difference is exactly the spec's metric on the whole test set.
    a = M.anchors(score, cost)
    full = [M.routing_summary(M.sweep(p, cost, score, cost), a) for p in (knows, guesses)]
    assert apgr["observed"] == pytest.approx(full[0]["apgr"] - full[1]["apgr"])
    expect_c95 = (full[0]["cost_at_95"] or 1.0) - (full[1]["cost_at_95"] or 1.0)
    assert c95["observed"] == pytest.approx(expect_c95)
    assert apgr["lo"] <= apgr["observed"] <= apgr["hi"]
