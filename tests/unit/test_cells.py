"""Task × difficulty cells: the partition, the smoothed table, out-of-fold honesty and the
choice of their weight in the served probability."""

from __future__ import annotations

import numpy as np
import pytest

from classifier.cells import (
    CELL_BAGS,
    CELL_PRIOR,
    CELL_WEIGHTS,
    N_LEVELS,
    CellsChoice,
    cells_oof,
    choose_cells_weight,
    fit_cells,
)
from classifier.train import unit_rows


def _two_topics(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit rows around two far-apart directions; along a third direction the prompts get
    harder. Arm 0 is right on easy prompts of both topics, arm 1 on all but the hardest
    third of topic 0 and on every prompt of topic 1."""
    rng = np.random.default_rng(seed)
    d = 16
    topic = np.arange(n) % 2
    hard = rng.uniform(-1.0, 1.0, n)
    x = rng.normal(0.0, 0.05, (n, d))
    x[:, 0] += np.where(topic == 0, 1.0, 0.0)
    x[:, 1] += np.where(topic == 1, 1.0, 0.0)
    x[:, 2] += 0.6 * hard
    space = unit_rows(x.astype(np.float32))
    s0 = (hard < 0).astype(np.float32)
    s1 = np.where(topic == 1, 1.0, (hard < 1 / 3).astype(np.float32)).astype(np.float32)
    sums = np.column_stack([s0, s1]).astype(np.float32)
    counts = np.ones_like(sums)
    return space, sums, counts


def test_cells_separate_topics_and_levels_and_smooth_towards_the_prior() -> None:
    space, sums, counts = _two_topics()
    rows = np.arange(space.shape[0])
    prior = (sums.sum(axis=0) / counts.sum(axis=0)).astype(np.float32)
    cells = fit_cells(space, sums, counts, prior, rows, seed=0)
    cls = cells.classes(space)
    n_tasks = cells.centroids.shape[1]
    assert cls.shape == (space.shape[0], CELL_BAGS)
    assert cells.table.shape == (CELL_BAGS, n_tasks * N_LEVELS, 2)
    topic = np.arange(space.shape[0]) % 2
    hard = space[:, 2]
    for b in range(CELL_BAGS):
        # Each cell's entry is its mean score with CELL_PRIOR pseudo-records of the prior.
        for c in np.unique(cls[:, b]):
            sel = cls[:, b] == c
            expected = (sums[sel].sum(axis=0) + CELL_PRIOR * prior) / (sel.sum() + CELL_PRIOR)
            np.testing.assert_allclose(cells.table[b, c], expected, rtol=1e-5)
            # Cells never mix the two topics.
            assert len(np.unique(topic[sel])) == 1
    # The partitions share the bands, and the bands follow the difficulty.
    band = cls % N_LEVELS
    assert (band == band[:, :1]).all()
    assert np.mean(hard[band[:, 0] == 0]) < np.mean(hard[band[:, 0] == N_LEVELS - 1])
    # The prediction is the mean of the partitions' cells.
    p = cells.predict(space)
    per_bag = np.stack([cells.table[b, cls[:, b]] for b in range(CELL_BAGS)], axis=1)
    # The partitions come from different k-means starts: they do not all agree.
    assert not all(np.allclose(per_bag[:, b], per_bag[:, 0]) for b in range(CELL_BAGS))
    np.testing.assert_allclose(p, per_bag.mean(axis=1), rtol=1e-6)
    # The predicted gap (arm 1 − arm 0) is larger on hard topic-1 prompts than on easy ones.
    band = band[:, 0]
    gap = p[:, 1] - p[:, 0]
    t1 = topic == 1
    assert gap[t1 & (band == N_LEVELS - 1)].mean() > gap[t1 & (band == 0)].mean() + 0.3


def test_out_of_fold_cells_never_see_the_prompt_they_predict() -> None:
    space, sums, counts = _two_topics()
    rows = np.arange(space.shape[0])
    folds = rows % 5
    prior = np.asarray([0.5, 0.5], np.float32)
    before = cells_oof(space, sums, counts, prior, rows, folds, seed=0)
    changed = sums.copy()
    changed[folds == 2] = 1.0 - changed[folds == 2]
    after = cells_oof(space, changed, counts, prior, rows, folds, seed=0)
    np.testing.assert_array_equal(before[folds == 2], after[folds == 2])
    assert not np.allclose(before[folds != 2], after[folds != 2])


def _pairs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    level = rng.uniform(0.2, 0.8, (n, 1))
    true_gap = np.where(np.arange(n) % 2 == 0, 0.3, -0.3)[:, None]
    score = np.clip(level + np.hstack([np.zeros((n, 1)), true_gap]), 0.0, 1.0)
    return level, true_gap, score


def test_cells_weight_follows_where_the_gaps_are_told() -> None:
    n = 600
    rng = np.random.default_rng(1)
    level, true_gap, score = _pairs(n, 1)
    have = np.ones_like(score, bool)
    exact = score.copy()
    noisy = np.clip(score + np.hstack([np.zeros((n, 1)), rng.normal(0, 0.4, (n, 1))]), 0, 1)
    # The cells know the gap, the stack's is noise: the cells get weight.
    cells_right = np.clip(level + np.hstack([np.zeros((n, 1)), true_gap]), 0, 1)
    choice = choose_cells_weight(noisy, cells_right, score, have)
    assert choice.weight > 0.0
    assert set(choice.errors) == set(CELL_WEIGHTS)
    assert choice.errors[choice.weight] == min(choice.errors.values())
    # The stack is exact and the cells know nothing of the gap: no weight.
    cells_flat = np.hstack([level, level])
    assert choose_cells_weight(exact, cells_flat, score, have).weight == 0.0


@pytest.mark.parametrize("arms_seen", [1, 2])
def test_no_weight_without_pairs_of_arms(arms_seen: int) -> None:
    _, _, score = _pairs(200, 2)
    have = np.zeros_like(score, bool)
    if arms_seen == 1:
        have[:, 0] = True  # logged traffic: one arm per prompt, no pair to measure
    else:
        have[:20] = True  # ten pairs are too few
    assert choose_cells_weight(score, score, score, have) == CellsChoice()
