"""Off-policy estimates (IPS, self-normalised IPS, doubly robust), their curves, metrics and
the paired bootstrap: hand-computed cases and a simulation whose true values are known."""

from __future__ import annotations

import numpy as np
import pytest

from classifier import metrics as M
from classifier import offpolicy as op
from router.errors import InvalidRequest

# --- hand-computed ------------------------------------------------------------------------
# Three logged requests, arm 0 cheap, arm 1 expensive.
LOGGED = op.Logged.build(
    arm=[0, 1, 0],
    score=[1.0, 1.0, 0.0],
    cost=[1.0, 10.0, 1.0],
    propensity=[0.5, 0.25, 0.8],
    n_arms=2,
)
# At λ = 0 this policy picks arm 0, arm 1, arm 1.
POLICY = op.Policy.build(p=[[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]], cost=[[1, 10], [1, 10], [1, 12]])
SCORE_HAT = np.asarray([[0.5, 0.9], [0.4, 0.8], [0.2, 0.6]])
COST_HAT = np.asarray([[1.0, 10.0], [1.0, 10.0], [1.0, 12.0]])


def test_ips_by_hand() -> None:
    # weights 1[match]/propensity: 2, 4, 0
    est = op.estimate(op.Ips(LOGGED), POLICY, lambdas=[0.0])
    assert est.curve.scores[0] == pytest.approx((2 * 1 + 4 * 1) / 3)
    assert est.curve.costs[0] == pytest.approx((2 * 1 + 4 * 10) / 3)
    # always arm 0: weights 2, 0, 1.25; always arm 1: 0, 4, 0
    assert est.arm_scores == pytest.approx([2 / 3, 4 / 3])
    assert est.arm_costs == pytest.approx([3.25 / 3, 40 / 3])


def test_self_normalised_ips_by_hand() -> None:
    est = op.estimate(op.Ips(LOGGED, normalised=True), POLICY, lambdas=[0.0])
    assert est.curve.scores[0] == pytest.approx(6 / 6)
    assert est.curve.costs[0] == pytest.approx(42 / 6)
    assert est.arm_scores == pytest.approx([2 / 3.25, 1.0])
    assert est.arm_costs == pytest.approx([1.0, 10.0])


def test_doubly_robust_by_hand() -> None:
    dr = op.DoublyRobust.build(LOGGED, SCORE_HAT, COST_HAT)
    est = op.estimate(dr, POLICY, lambdas=[0.0])
    # r0 matches: 0.5 + 2(1 - 0.5); r1 matches: 0.8 + 4(1 - 0.8); r2 does not: 0.6
    assert est.curve.scores[0] == pytest.approx((1.5 + 1.6 + 0.6) / 3)
    assert est.curve.costs[0] == pytest.approx((1 + 10 + 12) / 3)
    # always arm 0: 0.5 + 2(1 - 0.5), 0.4, 0.2 + 1.25(0 - 0.2)
    assert est.arm_scores[0] == pytest.approx((1.5 + 0.4 - 0.05) / 3)


def test_doubly_robust_with_a_perfect_direct_model_has_no_correction() -> None:
    truth = np.asarray([[1.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    costs = np.asarray([[1.0, 10.0], [1.0, 10.0], [1.0, 10.0]])
    logged = op.Logged.build(
        [0, 1, 0], [1.0, 1.0, 0.0], [1.0, 10.0, 1.0], [0.5, 0.25, 0.8], n_arms=2
    )
    est = op.estimate(op.DoublyRobust.build(logged, truth, costs), POLICY, lambdas=[0.0])
    assert est.curve.scores[0] == pytest.approx((1 + 1 + 1) / 3)
    assert est.arm_scores == pytest.approx([1 / 3, 1.0])


def test_full_information_is_the_spec_metric() -> None:
    s = np.asarray([[1.0, 1.0], [0.0, 1.0]])
    c = np.asarray([[1.0, 3.0], [1.0, 3.0]])
    pol = op.Policy.build([[0.9, 0.8], [0.1, 0.9]], c)
    est = op.estimate(op.FullInformation.build(s, c), pol)
    # points (2, 1.0) at small λ and (1, 0.5) at large λ; q(c) = 1 from c = 2 on, i.e. on
    # 50 of the 100 grid costs in [1, 3]: APGR = 0.5; cost@95 = 2 / 3
    assert est.apgr == pytest.approx(0.5)
    assert est.cost_at_95 == pytest.approx(2 / 3)
    ref = M.sweep(pol.p, pol.cost, s, c)
    assert np.allclose(est.curve.costs, ref.costs) and np.allclose(est.curve.scores, ref.scores)
    assert M.routing_summary(ref, M.anchors(s, c))["apgr"] == pytest.approx(est.apgr)


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(InvalidRequest, match="propensity"):
        op.Logged.build([0], [1.0], [1.0], [0.0], n_arms=2)
    with pytest.raises(InvalidRequest, match="out of range"):
        op.Logged.build([2], [1.0], [1.0], [0.5], n_arms=2)
    with pytest.raises(InvalidRequest, match="direct model"):
        op.estimator("dr", LOGGED)
    with pytest.raises(InvalidRequest, match="prompts"):
        op.estimate(op.Ips(LOGGED), op.Policy.build([[0.5, 0.5]], [[1.0, 2.0]]))


def test_capped_cost95() -> None:
    assert op.capped_cost95(None) == 1.0
    assert op.capped_cost95(1.7) == 1.0
    assert op.capped_cost95(0.25) == 0.25


# --- simulation with known truth ------------------------------------------------------------
N = 3000
N_ARMS = 3


def _world(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, op.Policy]:
    """True expected scores and costs per (prompt, arm), logging propensities, and a
    policy whose predictions are noisy versions of the truth."""
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(-2.0, 2.0, N)
    skill = np.asarray([-0.5, 0.5, 1.5])
    mu = 1.0 / (1.0 + np.exp(-(skill[None, :] - difficulty[:, None]) * 1.5))
    cost = np.asarray([1.0, 4.0, 20.0])[None, :] * rng.uniform(0.8, 1.2, (N, N_ARMS))
    prop = 0.1 + 0.7 * rng.dirichlet(np.ones(N_ARMS), N)
    p = np.clip(mu + rng.normal(0.0, 0.05, mu.shape), 0.0, 1.0)
    return mu, cost, prop, op.Policy.build(p, cost * rng.uniform(0.9, 1.1, cost.shape))


def _log(mu: np.ndarray, cost: np.ndarray, prop: np.ndarray, rng: np.random.Generator) -> op.Logged:
    u = rng.random(N)[:, None]
    arm = (u > np.cumsum(prop, axis=1)).sum(axis=1)
    arm = np.minimum(arm, N_ARMS - 1)
    rows = np.arange(N)
    score = (rng.random(N) < mu[rows, arm]).astype(float)
    return op.Logged.build(arm, score, cost[rows, arm], prop[rows, arm], n_arms=N_ARMS)


def test_ips_and_dr_recover_the_true_curve_and_dr_has_lower_variance() -> None:
    mu, cost, prop, policy = _world()
    lams = policy.lambdas()
    chosen = policy.choices(lams)
    rows = np.arange(N)
    true_score = mu[rows[None, :], chosen].mean(axis=1)
    true_cost = cost[rows[None, :], chosen].mean(axis=1)
    rng = np.random.default_rng(1)
    ips, dr = [], []
    for _ in range(60):
        logged = _log(mu, cost, prop, rng)
        for out, est in (
            (ips, op.Ips(logged)),
            (dr, op.DoublyRobust.from_policy(logged, policy)),
        ):
            t = est.terms(chosen)
            out.append((t.score.mean(axis=1), t.cost.mean(axis=1)))
    ips_s = np.asarray([x[0] for x in ips])
    dr_s = np.asarray([x[0] for x in dr])
    dr_c = np.asarray([x[1] for x in dr])
    ips_c = np.asarray([x[1] for x in ips])
    # unbiased: the mean over replications sits within a few standard errors of the truth
    for est_s in (ips_s, dr_s):
        se = est_s.std(axis=0) / np.sqrt(est_s.shape[0]) + 1e-9
        assert np.all(np.abs(est_s.mean(axis=0) - true_score) < 4.5 * se + 1e-3)
    assert np.max(np.abs(ips_c.mean(axis=0) - true_cost) / true_cost) < 0.03
    assert np.max(np.abs(dr_c.mean(axis=0) - true_cost) / true_cost) < 0.03
    # one draw is already close
    assert np.max(np.abs(dr_s[0] - true_score)) < 0.03
    assert np.max(np.abs(ips_s[0] - true_score)) < 0.06
    # the direct model removes most of the variance
    assert np.mean(dr_s.var(axis=0)) < 0.5 * np.mean(ips_s.var(axis=0))
    assert np.mean(dr_c.var(axis=0)) < 0.5 * np.mean(ips_c.var(axis=0))


def test_estimated_apgr_and_cost95_are_close_to_the_truth() -> None:
    mu, cost, prop, policy = _world()
    truth = op.estimate(op.FullInformation.build(mu, cost), policy)
    logged = _log(mu, cost, prop, np.random.default_rng(2))
    for est in (op.Ips(logged), op.Ips(logged, normalised=True)):
        got = op.estimate(est, policy)
        assert got.apgr == pytest.approx(truth.apgr, abs=0.12)
    dr = op.estimate(op.DoublyRobust.from_policy(logged, policy), policy)
    assert dr.apgr == pytest.approx(truth.apgr, abs=0.06)
    assert truth.cost_at_95 is not None and dr.cost_at_95 is not None
    assert dr.cost_at_95 == pytest.approx(truth.cost_at_95, abs=0.08)


def test_paired_bootstrap_separates_a_good_policy_from_a_random_one() -> None:
    mu, cost, prop, good = _world()
    rng = np.random.default_rng(3)
    bad = op.Policy.build(rng.uniform(0.0, 1.0, mu.shape), good.cost)
    logged = _log(mu, cost, prop, rng)
    dr = op.DoublyRobust.build(logged, good.p, good.cost)
    cmp = op.compare(good, bad, dr, n_boot=200, seed=7)
    assert cmp.apgr_gain.low > 0.1 and cmp.apgr_gain.point > cmp.apgr_gain.low
    assert cmp.cost95_saving.low > 0.0
    assert cmp.apgr_gain.valid == 200
    again = op.compare(good, bad, dr, n_boot=200, seed=7)
    assert again.apgr_gain == cmp.apgr_gain
    same = op.compare(good, good, dr, n_boot=50, seed=7)
    assert same.apgr_gain.point == 0.0 and same.apgr_gain.low == same.apgr_gain.high == 0.0
    truth_gain = (
        op.estimate(op.FullInformation.build(mu, cost), good).apgr
        - op.estimate(op.FullInformation.build(mu, cost), bad).apgr
    )
    assert cmp.apgr_gain.point == pytest.approx(truth_gain, abs=0.1)


def test_bootstrap_width_matches_the_spread_over_repeated_logs() -> None:
    mu, cost, prop, good = _world()
    rng = np.random.default_rng(4)
    other = op.Policy.build(np.clip(good.p + rng.normal(0.0, 0.25, good.p.shape), 0, 1), good.cost)
    gains = []
    first = None
    for r in range(30):
        logged = _log(mu, cost, prop, rng)
        dr = op.DoublyRobust.build(logged, good.p, good.cost)
        if first is None:
            first = op.compare(good, other, dr, n_boot=200, seed=r)
        gains.append(op.estimate(dr, good).apgr - op.estimate(dr, other, anchor_est=dr).apgr)
    assert first is not None
    spread = float(np.std(gains))
    boot_sd = (first.apgr_gain.high - first.apgr_gain.low) / (2 * 1.645)
    assert 0.5 < boot_sd / spread < 2.0


# --- the retrain gate's pure parts ----------------------------------------------------------
def _row(**kw: object) -> dict[str, object]:
    row: dict[str, object] = {
        "prompt_id": "r1",
        "prompt": "2+2?",
        "arm": "local-7b/greedy",
        "score": 1.0,
        "cost_usd": 0.001,
        "propensity": 0.5,
        "decision_id": "d1",
    }
    row.update(kw)
    return row


def test_logged_records_skip_and_count() -> None:
    from classifier.retrain import logged_records

    rows = [
        _row(),
        _row(arm="premium/think@4096"),
        _row(arm="premium/think@4096"),
        _row(propensity=None),
        _row(fallback_from="mid-32b"),
        _row(score=1.5),
    ]
    kept, skipped = logged_records(rows, ["local-7b/greedy", "premium/greedy"])
    assert [r.prompt_id for r in kept] == ["r1"] and kept[0].propensity == 0.5
    assert skipped.unknown_arm == {"premium/think@4096": 2}
    assert (skipped.no_propensity, skipped.fallback, skipped.invalid) == (1, 1, 1)
    assert skipped.first_invalid is not None and "score" in skipped.first_invalid
    assert skipped.total == 5


def test_gate_rules() -> None:
    from classifier.retrain import Check

    def check(rule: str, low: float, high: float) -> Check:
        return Check("logs", "apgr", rule, op.Interval((low + high) / 2, low, high, 200), 0.05)

    assert check("non-inferior", -0.04, 0.3).passed
    assert not check("non-inferior", -0.06, 0.3).passed
    assert check("not-worse", -0.6, -0.04).passed
    assert not check("not-worse", -0.6, -0.06).passed
    assert not check("non-inferior", float("nan"), float("nan")).passed
    assert "lower end below -0.05" in check("non-inferior", -0.06, 0.3).describe()
    assert "upper end below -0.05" in check("not-worse", -0.6, -0.06).describe()


def test_held_apart_is_seeded_and_by_prompt() -> None:
    from classifier.retrain import held_apart, prompt_key

    keys = [prompt_key(f"prompt {i}") for i in range(100)]
    first = held_apart(keys + keys[:10], 3, 0.2)
    assert first == held_apart(list(reversed(keys)), 3, 0.2)
    assert len(first) == 20 and first <= set(keys)
    assert first != held_apart(keys, 4, 0.2)
    with pytest.raises(InvalidRequest, match="holdout"):
        held_apart(keys, 3, 1.0)
