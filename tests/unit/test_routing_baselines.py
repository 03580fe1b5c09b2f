"""CPT and mixing metrics by hand, the ridge's leave-one-out shortcut, and the baselines."""

from __future__ import annotations

import numpy as np
import pytest

from classifier import baselines
from classifier import metrics as M
from classifier.ridge import ridge_loo


def _two_arm_table() -> tuple[np.ndarray, np.ndarray]:
    # 4 prompts; arm 0 cheap (cost 1), arm 1 best (cost 10).
    score = np.asarray([[1, 1], [0, 1], [0, 1], [0, 0]], float)
    cost = np.asarray([[1, 10]] * 4, float)
    return score, cost


def test_random_mix_scores_about_half_and_oracle_by_hand() -> None:
    score, cost = _two_arm_table()
    a = M.anchors(score, cost)
    assert (a.cheap, a.best) == (0, 1)
    random_apgr = M.apgr(M.mixing_curve(a), a)
    assert random_apgr == pytest.approx(0.5, abs=0.02)
    pick = M.oracle_choice(score, cost)
    assert pick.tolist() == [0, 1, 1, 0]
    oracle = M.point_curve(float(cost[np.arange(4), pick].mean()), float(score.max(1).mean()))
    # oracle: mean cost 5.5, score 0.75 = the best arm's score at about half its cost, so
    # q(c) is the full gap from c = 5.5 on and nothing before.
    grid = np.linspace(1.0, 10.0, 100)
    assert M.apgr(oracle, a) == pytest.approx(float(np.mean(grid >= 5.5)))
    assert M.cost_at_quality(oracle, a) == pytest.approx(5.5 / 10)


def test_cpt_by_hand() -> None:
    score, cost = _two_arm_table()
    a = M.anchors(score, cost)
    # gap = 0.75 - 0.25 = 0.5; sending prompt 1 alone recovers half of it.
    assert M.oracle_cpt(score, a, 0.5) == pytest.approx(0.25)
    assert M.oracle_cpt(score, a, 0.8) == pytest.approx(0.5)
    # A router that knows prompts 1 and 2 need the best arm.
    p = np.asarray([[0.9, 0.9], [0.1, 0.9], [0.2, 0.9], [0.5, 0.5]])
    shares, scores = M.strong_share_curve(p, cost, score, a.best)
    assert M.cpt(shares, scores, a, 0.5) == pytest.approx(0.25)
    assert M.cpt(shares, scores, a, 1.0) == pytest.approx(0.5)
    # One that sends the wrong prompts first needs more calls.
    bad = np.asarray([[0.1, 0.9], [0.9, 0.9], [0.8, 0.9], [0.2, 0.9]])
    shares, scores = M.strong_share_curve(bad, cost, score, a.best)
    assert M.cpt(shares, scores, a, 0.5) == pytest.approx(0.75)


def test_ridge_leave_one_out_matches_refitting() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5))
    y = x @ rng.normal(size=5) + 0.3 * rng.normal(size=40)
    w = rng.uniform(0.5, 2.0, size=40)
    fit = ridge_loo(x, y, w, (3.0,))
    for i in (0, 17, 39):
        keep = np.arange(40) != i
        xm = (w[keep] @ x[keep]) / w[keep].sum()
        ym = (w[keep] @ y[keep]) / w[keep].sum()
        xs = (x[keep] - xm) * np.sqrt(w[keep])[:, None]
        ys = (y[keep] - ym) * np.sqrt(w[keep])
        coef = np.linalg.solve(xs.T @ xs + 3.0 * np.eye(5), xs.T @ ys)
        assert fit.loo[i, 0] == pytest.approx(float((x[i] - xm) @ coef + ym), abs=1e-8)
    # the penalty with the lowest leave-one-out error wins
    many = ridge_loo(x, y, w, (0.01, 1e6))
    assert many.models[0].alpha == 0.01


def test_baselines_learn_a_signal() -> None:
    """Arm 1 succeeds on prompts near direction e0, arm 0 on those near e1."""
    rng = np.random.default_rng(3)
    n, d = 400, 16
    e = rng.normal(size=(n, d)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    s = np.column_stack([(e[:, 1] > 0), (e[:, 0] > -0.1)]).astype(float)
    have = np.ones_like(s, bool)
    test = np.zeros((2, d), np.float32)
    test[0, 0], test[1, 1] = 1.0, 1.0
    names = [f"emb_{i:03d}" for i in range(d)]
    preds = baselines.predict_all(names, e, s, have, test, seed=0)
    assert set(preds) == set(baselines.NAMES)
    for name, p in preds.items():
        assert p.shape == (2, 2), name
        assert p[0, 1] > p[1, 1] - 0.05, name  # arm 1 likes direction e0
        assert p[1, 0] > p[0, 0] - 0.05, name  # arm 0 likes direction e1
    assert preds["knn20"][0, 1] > 0.9 and preds["knn20"][1, 0] > 0.9


def test_routing_is_measured_on_full_information_prompts_and_says_how_many() -> None:
    """Three of 40 test prompts lack the premium arm: they are left out of the routing
    figures, and the table's first line says so."""
    from classifier.evaluate import routing_table
    from classifier.model_card import routing_lines
    from classifier.outcomes_io import OutcomeRecord

    rng = np.random.default_rng(5)
    arms = ["cheap/greedy", "premium/greedy"]
    d = 8
    names = [f"emb_{i:03d}" for i in range(d)]

    def records(n: int, tag: str, missing: int) -> tuple[list[OutcomeRecord], np.ndarray]:
        x = rng.normal(size=(n, d)).astype(np.float32)
        out = []
        for i in range(n):
            hard = bool(x[i, 0] > 1.0)
            out.append(OutcomeRecord(f"{tag}{i}", f"q{tag}{i}", arms[0], float(not hard), 1e-6))
            if i >= missing:
                out.append(OutcomeRecord(f"{tag}{i}", f"q{tag}{i}", arms[1], 1.0, 1e-5))
        return out, x

    train_recs, x_train = records(120, "tr", 0)
    test_recs, x_test = records(40, "te", 3)
    pos = {f"te{i}": i for i in range(40)}
    train_pos = {f"tr{i}": i for i in range(120)}
    p = np.column_stack([(x_test[:, 0] <= 1.0).astype(float), np.ones(40)]) * 0.9 + 0.05
    cost = np.tile([1e-6, 1e-5], (40, 1))
    table = routing_table(
        arms, names, p, cost, x_train, train_recs, train_pos, x_test, test_recs, pos, seed=0
    )
    assert table is not None
    assert (table["prompts"], table["test_prompts"]) == (37, 40)
    methods = table["methods"]
    # the router knows which prompts are hard: it recovers the gap at the oracle's cost
    assert methods["router"]["apgr"] == pytest.approx(methods["oracle"]["apgr"])
    assert methods["router"]["apgr"] > methods["random"]["apgr"] + 0.2
    first = routing_lines(table)[0]
    assert first.startswith("37 full-information prompts (of 40 test prompts; the other 3 lack")
    # its predicted gap is the actual gap up to scale; every baseline has a figure too
    # (None where its predicted gap does not vary)
    assert methods["router"]["gap_r"] == pytest.approx(1.0)
    assert all("gap_r" in methods[n] for n in baselines.NAMES)
    assert "gap_r" not in methods["random"]
    row = next(line for line in routing_lines(table) if line.startswith("| random |"))
    assert row.split("|")[5].strip() == "n/a"


def test_gap_correlation_by_hand() -> None:
    score = np.asarray([[1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 0]], float)
    assert M.gap_correlation(score, score) == pytest.approx(1.0)
    assert M.gap_correlation(-score, score) == pytest.approx(-1.0)
    # a prediction that moves every arm together knows nothing about the gaps
    level = np.tile(np.asarray([[0.9], [0.5], [0.7], [0.1]]), (1, 3))
    assert M.gap_correlation(level, score) is None
    # pair (0, 1): predicted gaps [1, -1, 0, 0] against actual [1, -1, 0, 0] → 1;
    # pair (0, 2): [1, -1, 0, 0] against [0, -1, 1, 0] → 0.5; pair (1, 2): [0, 0, 0, 0] → skipped
    p = np.asarray([[1, 0, 0], [0, 1, 1], [0, 0, 0], [0, 0, 0]], float)
    r02 = float(np.corrcoef([1, -1, 0, 0], [0, -1, 1, 0])[0, 1])
    assert M.gap_correlation(p, score) == pytest.approx((1.0 + r02) / 2)
