"""Calibration, token-estimate and routing metrics, as defined in ``spec/outcomes.md``.

Routing inputs are full-information matrices of shape (N prompts, A arms): predicted
``p`` and cost drive the choice, actual ``score`` and ``cost`` give the realised point.
Pure NumPy; no model or I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

F64 = NDArray[np.float64]

_REL_TOL = 1e-9


def _as1d(x: ArrayLike) -> F64:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def brier(p: ArrayLike, y: ArrayLike) -> float:
    """Mean squared difference between predicted probability and (graded) outcome."""
    pa, ya = _as1d(p), _as1d(y)
    return float(np.mean((pa - ya) ** 2))


def ece(p: ArrayLike, y: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error over ``n_bins`` equal-width bins of [0, 1].

    Sum over bins of (bin share) x |mean prediction - mean outcome|; p = 1.0 falls in the
    last bin.
    """
    pa, ya = _as1d(p), _as1d(y)
    if pa.size == 0:
        return float("nan")
    idx = np.minimum((pa * n_bins).astype(np.int64), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = idx == b
        k = int(mask.sum())
        if k:
            total += k / pa.size * abs(float(pa[mask].mean()) - float(ya[mask].mean()))
    return total


def within_factor(pred: ArrayLike, actual: ArrayLike, factor: float = 2.0) -> float:
    """Share of predictions within ``factor`` of the actual value (both floored at 1)."""
    pa = np.maximum(_as1d(pred), 1.0)
    aa = np.maximum(_as1d(actual), 1.0)
    ratio = pa / aa
    return float(np.mean((ratio <= factor) & (ratio >= 1.0 / factor)))


def share_at_or_below(bound: ArrayLike, actual: ArrayLike) -> float:
    """Share of actual values not above the predicted bound (coverage of a high quantile)."""
    return float(np.mean(_as1d(actual) <= _as1d(bound)))


@dataclass(frozen=True)
class Curve:
    """Realised operating points: mean actual cost and mean actual score per setting."""

    costs: F64
    scores: F64


@dataclass(frozen=True)
class Anchors:
    """The cheap arm (lowest mean cost) and the best arm (highest mean score)."""

    cheap: int
    best: int
    cost_cheap: float
    score_cheap: float
    cost_best: float
    score_best: float


def anchors(score: ArrayLike, cost: ArrayLike, weights: ArrayLike | None = None) -> Anchors:
    """Cheap and best arms of a full-information (N, A) table; ties go to the lower index
    for the cheap arm and to the cheaper arm for the best. ``weights`` (N,), summing to 1,
    weigh the prompts (a bootstrap resample); by default every prompt counts the same."""
    s = np.asarray(score, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    if weights is None:
        ms, mc = s.mean(axis=0), c.mean(axis=0)
    else:
        w = np.asarray(weights, dtype=np.float64)
        ms, mc = w @ s, w @ c
    cheap = int(np.argmin(mc))
    top = np.flatnonzero(ms >= ms.max() - 1e-12)
    best = int(top[np.argmin(mc[top])])
    return Anchors(
        cheap, best, float(mc[cheap]), float(ms[cheap]), float(mc[best]), float(ms[best])
    )


def choose(p: ArrayLike, pred_cost: ArrayLike, lam: float) -> NDArray[np.int64]:
    """Per prompt, the arm maximising ``p - lam * pred_cost``; ties go to the cheaper arm."""
    pa = np.asarray(p, dtype=np.float64)
    ca = np.asarray(pred_cost, dtype=np.float64)
    util = pa - lam * ca
    top = util >= util.max(axis=1, keepdims=True) - 1e-12
    picked: NDArray[np.int64] = np.argmin(np.where(top, ca, np.inf), axis=1).astype(np.int64)
    return picked


def lambda_grid(p: ArrayLike, pred_cost: ArrayLike, n: int = 256) -> F64:
    """λ values from 0 (highest predicted p) to a value at which the cheapest predicted
    arm wins every prompt; geometric in between."""
    pa = np.asarray(p, dtype=np.float64)
    ca = np.asarray(pred_cost, dtype=np.float64)
    positive = ca[ca > 0]
    scale = float(positive.max()) if positive.size else 1.0
    gaps = np.diff(np.sort(ca, axis=1), axis=1)
    gaps = gaps[gaps > 0]
    min_gap = float(gaps.min()) if gaps.size else scale
    p_range = max(float(pa.max() - pa.min()), 1e-6)
    lo = 1e-4 * p_range / scale
    hi = 10.0 * p_range / min_gap
    return np.concatenate([[0.0], np.geomspace(lo, max(hi, lo * 10.0), n)])


def realised(
    p: ArrayLike,
    pred_cost: ArrayLike,
    score: ArrayLike,
    cost: ArrayLike,
    lambdas: ArrayLike | None = None,
) -> tuple[F64, F64]:
    """For each λ of the grid, every prompt's actual score and cost of the arm chosen
    there: two (L, N) arrays."""
    s = np.asarray(score, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    lams = lambda_grid(p, pred_cost) if lambdas is None else _as1d(lambdas)
    rows = np.arange(s.shape[0])
    picks = np.stack([choose(p, pred_cost, float(lam)) for lam in lams])
    return s[rows, picks], c[rows, picks]


def sweep(
    p: ArrayLike,
    pred_cost: ArrayLike,
    score: ArrayLike,
    cost: ArrayLike,
    lambdas: ArrayLike | None = None,
) -> Curve:
    """Realised (mean cost, mean score) for each λ of the grid."""
    s_real, c_real = realised(p, pred_cost, score, cost, lambdas)
    return Curve(c_real.mean(axis=1), s_real.mean(axis=1))


def mixing_curve(a: Anchors, n: int = 101) -> Curve:
    """Expected points of sending a random share of prompts to the best arm, the rest to
    the cheap arm."""
    share = np.linspace(0.0, 1.0, n)
    return Curve(
        a.cost_cheap + share * (a.cost_best - a.cost_cheap),
        a.score_cheap + share * (a.score_best - a.score_cheap),
    )


def point_curve(cost: float, score: float) -> Curve:
    return Curve(np.asarray([cost]), np.asarray([score]))


def quality_at(curve: Curve, c: float, floor: float) -> float:
    """q(c): best score among points with mean cost <= c; ``floor`` if there is none."""
    ok = curve.costs <= c + _REL_TOL * max(abs(c), 1e-300)
    return float(curve.scores[ok].max()) if ok.any() else floor


def apgr(curve: Curve, a: Anchors, n: int = 100) -> float:
    """Average performance gap recovered over ``n`` costs in [cost(cheap), cost(best)].

    A cost below the curve's cheapest point counts as no gain over the cheap arm (the
    cheap arm is always affordable there). NaN when the anchors leave no gap to recover.
    """
    gap = a.score_best - a.score_cheap
    if gap <= 0 or a.cost_best <= a.cost_cheap:
        return float("nan")
    grid = np.linspace(a.cost_cheap, a.cost_best, n)
    q = np.asarray([quality_at(curve, float(c), a.score_cheap) for c in grid])
    return float(np.mean((q - a.score_cheap) / gap))


def cost_at_quality(curve: Curve, a: Anchors, share: float = 0.95) -> float | None:
    """Smallest mean cost reaching ``share`` x score(best), over cost(best); None if unreached."""
    target = share * a.score_best
    ok = curve.scores >= target - 1e-12
    if not ok.any() or a.cost_best <= 0:
        return None
    return float(curve.costs[ok].min() / a.cost_best)


def oracle_choice(score: ArrayLike, cost: ArrayLike) -> NDArray[np.int64]:
    """Per prompt, the cheapest arm among those with the highest actual score."""
    s = np.asarray(score, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    top = s >= s.max(axis=1, keepdims=True) - 1e-12
    picked: NDArray[np.int64] = np.argmin(np.where(top, c, np.inf), axis=1).astype(np.int64)
    return picked


def strong_share_curve(
    p: ArrayLike,
    pred_cost: ArrayLike,
    score: ArrayLike,
    strong: int,
    lambdas: ArrayLike | None = None,
) -> tuple[F64, F64]:
    """For each λ: (share of prompts sent to arm ``strong``, mean actual score)."""
    s = np.asarray(score, dtype=np.float64)
    lams = lambda_grid(p, pred_cost) if lambdas is None else _as1d(lambdas)
    rows = np.arange(s.shape[0])
    shares, scores = [], []
    for lam in lams:
        pick = choose(p, pred_cost, float(lam))
        shares.append(float(np.mean(pick == strong)))
        scores.append(float(s[rows, pick].mean()))
    return np.asarray(shares), np.asarray(scores)


def cpt(shares: ArrayLike, scores: ArrayLike, a: Anchors, target: float) -> float | None:
    """Call-performance threshold: the smallest share of calls to the best arm whose
    quality recovers ``target`` of the gap between the cheap and the best arm."""
    gap = a.score_best - a.score_cheap
    if gap <= 0:
        return None
    pgr = (_as1d(scores) - a.score_cheap) / gap
    ok = pgr >= target - 1e-12
    return float(_as1d(shares)[ok].min()) if ok.any() else None


def oracle_cpt(score: ArrayLike, a: Anchors, target: float) -> float | None:
    """CPT of an oracle that sends to the best arm exactly the prompts where it gains most."""
    s = np.asarray(score, dtype=np.float64)
    gap = a.score_best - a.score_cheap
    if gap <= 0:
        return None
    gain = np.sort(s[:, a.best] - s[:, a.cheap])[::-1]
    need = target * gap * s.shape[0]
    total = np.cumsum(gain)
    hit = np.flatnonzero(total >= need - 1e-9)
    return float((hit[0] + 1) / s.shape[0]) if hit.size else None


def gap_correlation(p: ArrayLike, score: ArrayLike) -> float | None:
    """How well predictions order the prompts by the score gap between arms: for every
    pair of arms, the Pearson correlation over prompts of the predicted gap ``p_i - p_j``
    with the actual gap ``s_i - s_j``, averaged over the pairs. 0 means the predictions
    say nothing about which arm wins where (beyond the arms' averages); None when no pair
    has a gap that varies in both."""
    pa = np.asarray(p, dtype=np.float64)
    sa = np.asarray(score, dtype=np.float64)
    cors: list[float] = []
    for i in range(pa.shape[1]):
        for j in range(i + 1, pa.shape[1]):
            dp, ds = pa[:, i] - pa[:, j], sa[:, i] - sa[:, j]
            if dp.std() > 1e-12 and ds.std() > 1e-12:
                cors.append(float(np.corrcoef(dp, ds)[0, 1]))
    return float(np.mean(cors)) if cors else None


def routing_summary(curve: Curve, a: Anchors) -> dict[str, float | None]:
    """APGR and cost@95 of one curve, plus its highest realised score."""
    return {
        "apgr": apgr(curve, a),
        "cost_at_95": cost_at_quality(curve, a, 0.95),
        "max_score": float(curve.scores.max()),
    }


__all__ = [
    "Anchors",
    "Curve",
    "anchors",
    "apgr",
    "brier",
    "choose",
    "cost_at_quality",
    "cpt",
    "ece",
    "gap_correlation",
    "lambda_grid",
    "mixing_curve",
    "oracle_choice",
    "oracle_cpt",
    "point_curve",
    "quality_at",
    "realised",
    "routing_summary",
    "share_at_or_below",
    "strong_share_curve",
    "sweep",
    "within_factor",
]
