"""Weighted ridge regression with the penalty chosen by exact leave-one-out CV.

One SVD of the (weighted, centred) design serves every penalty in the grid and every
target that shares the rows, so choosing the penalty costs little more than one fit.
The leave-one-out residual of row i is ``r_i / (1 - h_ii)`` (``h`` the hat matrix,
including the intercept's ``w_i / sum(w)``), the standard closed form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]


@dataclass
class Linear:
    """``x @ coef_ + intercept_`` for one target."""

    coef_: F64
    intercept_: float
    alpha: float

    def predict(self, x: NDArray[Any]) -> F64:
        out: F64 = np.asarray(x, np.float64) @ self.coef_ + self.intercept_
        return out


@dataclass
class RidgeFit:
    """Fitted targets (one :class:`Linear` each) and their leave-one-out predictions."""

    models: list[Linear]
    loo: F64


def ridge_loo(x: NDArray[Any], y: F64, w: F64 | None, alphas: Sequence[float]) -> RidgeFit:
    """Fit ``y`` (n,) or (n, T) on ``x`` (n, F); each target's alpha by LOO weighted MSE."""
    x64 = np.asarray(x, np.float64)
    y2 = np.asarray(y, np.float64).reshape(x64.shape[0], -1)
    wv = np.ones(x64.shape[0]) if w is None else np.asarray(w, np.float64)
    sw = wv.sum()
    xbar = wv @ x64 / sw
    ybar = wv @ y2 / sw
    root = np.sqrt(wv)[:, None]
    xs = (x64 - xbar) * root
    ys = (y2 - ybar) * root
    u, s, vt = np.linalg.svd(xs, full_matrices=False)
    uty = u.T @ ys
    base_h = wv / sw
    best_loss = np.full(y2.shape[1], np.inf)
    best_alpha = np.zeros(y2.shape[1])
    best_loo = np.zeros_like(y2)
    s2 = s * s
    u2 = u * u
    for alpha in alphas:
        shrink = s2 / (s2 + alpha)
        fitted_s = u @ (shrink[:, None] * uty)
        h = u2 @ shrink + base_h
        resid = (ys - fitted_s) / root / np.maximum(1.0 - h, 1e-9)[:, None]
        loss = wv @ (resid * resid) / sw
        better = loss < best_loss - 1e-12
        best_loss = np.where(better, loss, best_loss)
        best_alpha = np.where(better, alpha, best_alpha)
        best_loo[:, better] = (y2 - resid)[:, better]
    models = []
    for t in range(y2.shape[1]):
        shrink = s / (s2 + best_alpha[t])
        coef = vt.T @ (shrink * uty[:, t])
        models.append(Linear(coef, float(ybar[t] - xbar @ coef), float(best_alpha[t])))
    return RidgeFit(models, best_loo)


__all__ = ["Linear", "RidgeFit", "ridge_loo"]
