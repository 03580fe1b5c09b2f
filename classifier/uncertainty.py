"""How much of a held-out figure chance alone could give.

A test split of a few hundred prompts is small. The figures below let a report say whether
a difference is real:

* :func:`ece_if_calibrated`: the ECE that a perfectly calibrated model would show on the
  same test prompts. Outcomes are drawn from the model's own ``p``, and the median and
  95th percentile of the resulting ECE are reported. An observed ECE below that 95th
  percentile is what chance gives.
* :func:`paired_bootstrap`: intervals of (router − baseline) for APGR and cost@95. The
  test prompts are resampled with replacement; both methods keep their choices, so every
  draw compares them on the same prompts. Anchors (cheap and best arm) are recomputed in
  each draw, exactly as ``spec/outcomes.md`` defines them on the resampled set.

Pure NumPy, seeded, deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from classifier import metrics as M

F64 = NDArray[np.float64]

ECE_DRAWS = 500
BOOTSTRAP_DRAWS = 300
LEVEL = 0.90


def ece_if_calibrated(
    p: ArrayLike, n_bins: int = 10, draws: int = ECE_DRAWS, seed: int = 0
) -> tuple[float, float]:
    """(median, 95th percentile) of the ECE of 0/1 outcomes drawn with probability ``p``.

    That is the ECE a perfectly calibrated model would show on this many prompts, with
    these predictions. For graded scores it overstates the noise somewhat, since a graded
    score varies less than a 0/1 one with the same mean.
    """
    pa = np.asarray(p, dtype=np.float64).reshape(-1)
    if pa.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    totals = [M.ece(pa, rng.random(pa.size) < pa, n_bins) for _ in range(draws)]
    return float(np.median(totals)), float(np.quantile(totals, 0.95))


def _figures(s_real: F64, c_real: F64, a: M.Anchors, w: F64) -> tuple[float, float]:
    """(APGR, cost@95 with "unreached" as 1.0) of one method under prompt weights ``w``."""
    curve = M.Curve(c_real @ w, s_real @ w)
    c95 = M.cost_at_quality(curve, a, 0.95)
    return M.apgr(curve, a), 1.0 if c95 is None else c95


def paired_bootstrap(
    preds: Mapping[str, F64],
    pred_cost: F64,
    score: F64,
    cost: F64,
    *,
    reference: str = "router",
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, dict[str, Any]]:
    """Per other method: (reference − method) for APGR and cost@95, observed and as a
    ``level`` percentile interval over ``draws`` resamples of the prompts, plus the share
    of draws in which the reference is ahead (higher APGR, lower cost@95). "Unreached"
    cost@95 counts as 1.0 (no saving)."""
    figs = _draw_figures(preds, pred_cost, score, cost, draws, np.random.default_rng(seed))
    return _intervals(figs, reference, draws, level)


def paired_bootstrap_groups(
    groups: Sequence[tuple[Mapping[str, F64], F64, F64, F64]],
    *,
    reference: str = "router",
    draws: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, dict[str, Any]]:
    """:func:`paired_bootstrap` of the mean over groups (cross-validation folds, each
    ``(preds, pred_cost, score, cost)`` of its own prompts): every draw resamples the
    prompts within each group, and the figures of a draw are the mean of the groups'."""
    rng = np.random.default_rng(seed)
    per_group = [_draw_figures(p, cf, s, c, draws, rng) for p, cf, s, c in groups]
    figs = {name: np.mean([g[name] for g in per_group], axis=0) for name in per_group[0]}
    return _intervals(figs, reference, draws, level)


def _draw_figures(
    preds: Mapping[str, F64],
    pred_cost: F64,
    score: F64,
    cost: F64,
    draws: int,
    rng: np.random.Generator,
) -> dict[str, F64]:
    """Per method, (draws + 1, 2) APGR and cost@95: row 0 on the prompts as they are, then
    one row per resample."""
    s = np.asarray(score, np.float64)
    c = np.asarray(cost, np.float64)
    cf = np.asarray(pred_cost, np.float64)
    n = s.shape[0]
    weights = np.vstack(
        [np.full((1, n), 1.0 / n), rng.multinomial(n, np.full(n, 1.0 / n), size=draws) / n]
    )
    anchors = [M.anchors(s, c, w) for w in weights]
    real = {name: M.realised(p, cf, s, c) for name, p in preds.items()}
    return {
        name: np.asarray([_figures(sr, cr, a, w) for a, w in zip(anchors, weights, strict=True)])
        for name, (sr, cr) in real.items()
    }


def _intervals(
    figs: Mapping[str, F64], reference: str, draws: int, level: float
) -> dict[str, dict[str, Any]]:
    ref = figs[reference]
    lo_q, hi_q = (1.0 - level) / 2.0, 1.0 - (1.0 - level) / 2.0
    out: dict[str, dict[str, Any]] = {}
    for name, f in figs.items():
        if name == reference:
            continue
        entry: dict[str, Any] = {"draws": draws, "level": level}
        for col, key, ahead in ((0, "apgr", 1.0), (1, "cost_at_95", -1.0)):
            diff = ref[:, col] - f[:, col]
            boot = diff[1:][~np.isnan(diff[1:])]
            entry[key] = {
                "observed": float(diff[0]),
                "lo": float(np.quantile(boot, lo_q)) if boot.size else float("nan"),
                "hi": float(np.quantile(boot, hi_q)) if boot.size else float("nan"),
                "ahead_share": float(np.mean(ahead * boot > 0)) if boot.size else float("nan"),
            }
        out[name] = entry
    return out


__all__ = [
    "BOOTSTRAP_DRAWS",
    "ECE_DRAWS",
    "LEVEL",
    "ece_if_calibrated",
    "paired_bootstrap",
    "paired_bootstrap_groups",
]
