"""Task × difficulty cells: mean scores of the training prompts of one kind and level.

The NVIDIA LLM router's idea, fitted on the kNN's space: every prompt falls in a *task*
(the nearest of ``N_TASKS`` k-means centroids of the training prompts) and a *difficulty*
(which of ``N_LEVELS`` equal-count bands a ridge regression of its failure rate puts it
in), and is predicted each arm's mean score over the training prompts of its cell, shrunk
towards the arm's overall mean by ``CELL_PRIOR`` pseudo-records. k-means from one start
draws its borders by chance, and a prompt near a border gets one cell's table or the
other's; so ``CELL_BAGS`` partitions from different k-means starts share the difficulty
bands, and a prompt's prediction is the mean of its cells in all of them.

Its gaps between arms are the mean gaps of a hard partition that knows how hard a prompt
is, which the kNN's neighbourhoods do not: two prompts on the same subject can sit at very
different levels, and the arms' gap depends on the level (on easy prompts every arm is
right, on hopeless ones every arm is wrong). Mixed into the served probability with the
weight that minimises the out-of-fold gap error (:func:`choose_cells_weight`), it adds
what neither the neighbourhoods nor the per-prompt learners carry. Every step is a
standard ONNX operator (MatMul, ArgMax, Greater, ReduceSum, Gather;
``classifier.onnx_export``). ``classifier.baselines.task_complexity`` is the same idea as
a standalone router, and shares these sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from classifier.gap_blend import MIN_PAIRS, gap_error
from classifier.ridge import ridge_loo

F32 = NDArray[np.float32]
F64 = NDArray[np.float64]

N_TASKS = 8
N_LEVELS = 3
CELL_PRIOR = 5.0
LEVEL_RIDGE = 10.0
CELL_BAGS = 5


@dataclass
class CellModel:
    """``B`` partitions (one per k-means start) sharing one difficulty ridge: centroids
    (B, T, d) of unit rows, the ridge (d,) + bias, the band cuts (L − 1,) and each
    partition's smoothed mean scores per cell, (B, T·L, A), cell = task·L + band."""

    centroids: F32
    level_w: F32
    level_b: float
    cuts: F32
    table: F32

    @property
    def levels(self) -> int:
        return int(self.cuts.shape[0]) + 1

    @property
    def bags(self) -> int:
        return int(self.centroids.shape[0])

    def classes(self, q: F32) -> NDArray[np.int64]:
        """Cell of each unit row of ``q`` (N, d) in every partition, (N, B)."""
        half = 0.5 * np.sum(self.centroids * self.centroids, axis=2)
        score = np.einsum("nd,btd->nbt", q, self.centroids) - half[None, :, :]
        task = np.argmax(score, axis=2).astype(np.int64)
        level = (q @ self.level_w + np.float32(self.level_b))[:, None] > self.cuts[None, :]
        out: NDArray[np.int64] = task * self.levels + level.sum(axis=1).astype(np.int64)[:, None]
        return out

    def predict(self, q: F32) -> F64:
        """Each arm's smoothed mean score in the cells of every row, averaged over the
        partitions, (N, A)."""
        cls = self.classes(np.asarray(q, np.float32))
        per_bag = self.table[np.arange(self.bags)[None, :], cls].astype(np.float64)
        out: F64 = per_bag.mean(axis=1)
        return out


def fit_cells(
    space: F32, sums: F32, counts: F32, prior: F32, rows: NDArray[np.int64], seed: int
) -> CellModel:
    """Cells fitted on ``rows`` of ``space`` (unit rows) with their weighted score sums and
    weights per arm; ``prior`` is each arm's mean score, the value an empty cell takes.
    Partition ``b`` is k-means seeded with ``seed·CELL_BAGS + b``."""
    from sklearn.cluster import KMeans

    x = np.asarray(space[rows], np.float32)
    s, c = sums[rows].astype(np.float64), counts[rows].astype(np.float64)
    n_tasks = max(1, min(N_TASKS, x.shape[0]))
    x64 = x.astype(np.float64)
    centroids = np.stack(
        [
            KMeans(n_clusters=n_tasks, n_init=4, random_state=seed * CELL_BAGS + b)
            .fit(x64)
            .cluster_centers_
            for b in range(CELL_BAGS)
        ]
    ).astype(np.float32)
    seen = c.sum(axis=1) > 0
    fail = np.where(seen, 1.0 - s.sum(axis=1) / np.maximum(c.sum(axis=1), 1e-12), 0.0)
    if seen.any():
        fit = ridge_loo(x[seen], fail[seen], None, [LEVEL_RIDGE]).models[0]
        level_w, level_b = fit.coef_, fit.intercept_
    else:
        level_w, level_b = np.zeros(x.shape[1]), 0.0
    level = x64 @ level_w + level_b
    qs = np.linspace(0.0, 1.0, N_LEVELS + 1)[1:-1]
    cuts = np.quantile(level[seen], qs) if seen.any() else np.zeros(N_LEVELS - 1)
    n_cells = n_tasks * N_LEVELS
    model = CellModel(
        centroids=centroids,
        level_w=level_w.astype(np.float32),
        level_b=float(level_b),
        cuts=np.asarray(cuts, np.float32),
        table=np.zeros((CELL_BAGS, n_cells, sums.shape[1]), np.float32),
    )
    cls = model.classes(x)
    p = prior.astype(np.float64)[None, :]
    for b in range(CELL_BAGS):
        num = np.zeros((n_cells, sums.shape[1]))
        den = np.zeros_like(num)
        np.add.at(num, cls[:, b], s)
        np.add.at(den, cls[:, b], c)
        model.table[b] = (num + CELL_PRIOR * p) / (den + CELL_PRIOR)
    return model


def cells_oof(
    space: F32,
    sums: F32,
    counts: F32,
    prior: F32,
    rows: NDArray[np.int64],
    folds: NDArray[np.int64],
    seed: int,
) -> F64:
    """Out-of-fold cell predictions for ``rows`` (len(rows), A): each fold of ``folds``
    (indexed by row) predicted by cells fitted on the others."""
    out = np.full((len(rows), sums.shape[1]), np.nan)
    fold_of = folds[rows]
    for f in np.unique(fold_of):
        te = np.flatnonzero(fold_of == f)
        tr = rows[fold_of != f]
        if te.size == 0 or tr.size == 0:
            continue
        out[te] = fit_cells(space, sums, counts, prior, tr, seed).predict(space[rows[te]])
    return out


CELL_WEIGHTS: tuple[float, ...] = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75)


@dataclass
class CellsChoice:
    """ω of ``p = (1 − ω)·stack + ω·cells`` and the out-of-fold gap error of each candidate
    (empty when fewer than ``MIN_PAIRS`` pairs of arms were observed on a training prompt,
    and ω = 0)."""

    weight: float = 0.0
    errors: dict[float, float] = field(default_factory=dict)


def choose_cells_weight(
    stack_p: F64, cells_p: F64, target: F64, have: NDArray[np.bool_]
) -> CellsChoice:
    """ω minimising the out-of-fold gap error (``classifier.gap_blend.gap_error``: the
    squared error of the predicted score differences over every pair of arms observed on
    the same prompt) of the mixture; ties go to the smaller ω."""
    ok = ~(np.isnan(stack_p).any(axis=1) | np.isnan(cells_p).any(axis=1))
    s, c, t, h = stack_p[ok], cells_p[ok], target[ok], have[ok]
    if s.shape[1] < 2 or gap_error(s, t, h)[1] < MIN_PAIRS:
        return CellsChoice()
    errors = {w: gap_error((1.0 - w) * s + w * c, t, h)[0] for w in CELL_WEIGHTS}
    best = min(errors.values())
    return CellsChoice(min(w for w, e in errors.items() if e <= best + 1e-12), errors)


__all__ = [
    "CELL_BAGS",
    "CELL_PRIOR",
    "CELL_WEIGHTS",
    "N_LEVELS",
    "N_TASKS",
    "CellModel",
    "CellsChoice",
    "cells_oof",
    "choose_cells_weight",
    "fit_cells",
]
