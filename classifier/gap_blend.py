"""How far apart the arms are on a prompt: the stack's own estimate or the neighbourhood's.

A prompt's predicted scores carry two things: a *level* that every arm shares (how hard the
prompt is) and the *gaps* between arms (which arm does better on it). The stack is fitted by
log loss, which the level dominates, so it keeps the gaps of its sharpest learners, and those
gaps follow each prompt's noise. Routing is decided by the gaps alone. Which arm does better
is mostly a property of a kind of prompt, not of one prompt, and the broad neighbourhood (the
mean scores of the ``BROAD_K`` nearest training prompts) estimates it with far less noise.

So the served logits keep the stack's level and replace its gaps by a mixture:

    m = level(s) + κ · gap(s) + (1 − κ) · gap(b)

with ``s`` the stack's logits, ``b`` the broad kNN's, ``level`` the mean over the arms and
``gap`` the rest; each arm's mixture is then calibrated again, ``a_j · m_j + c_j``, by a
weighted logistic fit of that arm's outcomes (:func:`recalibrate`). κ is chosen inside
``train`` on the out-of-fold predictions by the mean squared error of the predicted score
differences between arms, over every pair of arms observed on the same training prompt:
the quantity routing uses. The whole map is linear in the stack's inputs, so it is folded
into the stack's weights (:func:`fold_into_stack`) and the exported graph does not change.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from classifier.links import sigmoid

F64 = NDArray[np.float64]

GAP_WEIGHTS: tuple[float, ...] = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
MIN_PAIRS = 50
MIN_FULL_SHARE = 0.9


ArmOutcomes = tuple[NDArray[np.int64], NDArray[np.int64], F64]
"""One arm's classification rows: prompt row, label (0/1), weight (graded scores are split
into a weighted 1 and a weighted 0)."""


@dataclass
class GapChoice:
    """κ, each arm's recalibration ``a_j · m_j + c_j``, and the out-of-fold gap error of each
    candidate κ (empty when none was measured, and the stack is served unchanged: fewer than
    two arms, fewer than ``MIN_PAIRS`` observed pairs, or a share ``full_share`` of prompts
    with every arm observed below ``MIN_FULL_SHARE``)."""

    weight: float = 1.0
    slope: list[float] = field(default_factory=list)
    intercept: list[float] = field(default_factory=list)
    errors: dict[float, float] = field(default_factory=dict)
    pairs: int = 0
    full_share: float = 0.0


def blend(stack_logits: F64, broad_logits: F64, weight: float) -> F64:
    """The stack's level with κ of its own gaps and 1 − κ of the broad kNN's, (N, A)."""
    level = stack_logits.mean(axis=1, keepdims=True)
    own = stack_logits - level
    broad = broad_logits - broad_logits.mean(axis=1, keepdims=True)
    out: F64 = level + weight * own + (1.0 - weight) * broad
    return out


def gap_error(p: F64, target: F64, have: NDArray[np.bool_]) -> tuple[float, int]:
    """Mean squared error of predicted score differences over every pair of arms observed on
    the same prompt, and the number of such (prompt, pair) cells."""
    total, count = 0.0, 0
    a_n = p.shape[1]
    for i in range(a_n):
        for j in range(i + 1, a_n):
            both = have[:, i] & have[:, j]
            if not both.any():
                continue
            d = (p[both, i] - p[both, j]) - (target[both, i] - target[both, j])
            total += float(np.sum(d * d))
            count += int(both.sum())
    return (total / count if count else float("nan")), count


def recalibrate(m: F64, y: NDArray[np.int64], w: F64, ridge: float = 1e-3) -> tuple[float, float]:
    """(a, c) of the weighted logistic fit ``P(y = 1) = σ(a·m + c)`` (damped Newton steps, a
    small ridge on ``a − 1`` and ``c``; (1, 0) when the rows hold only one label)."""
    if w.sum() <= 0 or len(np.unique(y[w > 0])) < 2:
        return 1.0, 0.0
    x = np.column_stack([m, np.ones_like(m)])
    prior = np.asarray([1.0, 0.0])
    scale = float(w.sum())

    def loss(theta: F64) -> float:
        z = x @ theta
        ll = np.logaddexp(0.0, z) - y * z
        return float(np.sum(w * ll)) / scale + 0.5 * ridge * float(np.sum((theta - prior) ** 2))

    theta = prior.copy()
    current = loss(theta)
    for _ in range(100):
        p = sigmoid(x @ theta)
        grad = x.T @ (w * (p - y)) / scale + ridge * (theta - prior)
        hess = (x * (w * p * (1.0 - p))[:, None]).T @ x / scale + ridge * np.eye(2)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-8 and loss(theta - t * step) > current:
            t *= 0.5
        theta = theta - t * step
        previous, current = current, loss(theta)
        if previous - current < 1e-12:
            break
    return float(theta[0]), float(theta[1])


def _calibrated(
    mixed: F64, outcomes: list[ArmOutcomes], pos: NDArray[np.int64]
) -> tuple[F64, list[float], list[float]]:
    """Each arm's mixture recalibrated on its out-of-fold rows (``pos`` maps a prompt row to
    its row of ``mixed``, −1 where it has none)."""
    slopes, intercepts = [], []
    out = np.empty_like(mixed)
    for j, (rows, y, w) in enumerate(outcomes):
        r = pos[rows]
        keep = r >= 0
        a, c = recalibrate(mixed[r[keep], j], y[keep], w[keep])
        slopes.append(a)
        intercepts.append(c)
        out[:, j] = a * mixed[:, j] + c
    return out, slopes, intercepts


def choose_gap_weight(
    stack_logits: F64,
    broad_logits: F64,
    target: F64,
    have: NDArray[np.bool_],
    outcomes: list[ArmOutcomes],
) -> GapChoice:
    """κ minimising the out-of-fold gap error of the recalibrated mixture, with that
    recalibration. Rows are prompt rows; ``outcomes`` holds each arm's classification rows.

    Both are fitted on the prompts with every arm's out-of-fold logit (the full-information
    ones). The stack is kept unchanged (κ = 1, no recalibration) with fewer than two arms,
    fewer than ``MIN_PAIRS`` observed pairs, or when those prompts are less than
    ``MIN_FULL_SHARE`` of the prompts with any record: a recalibration fitted on a minority
    of the prompts would move every arm's level on all of them (logged traffic, or an arm
    tried on a few prompts only). Ties go to the larger κ."""
    ok = ~(np.isnan(stack_logits).any(axis=1) | np.isnan(broad_logits).any(axis=1))
    if stack_logits.shape[1] < 2:
        return GapChoice()
    seen = int(have.any(axis=1).sum())
    share = float(ok.sum()) / seen if seen else 0.0
    s, b, t, h = stack_logits[ok], broad_logits[ok], target[ok], have[ok]
    _, pairs = gap_error(sigmoid(s), t, h)
    if pairs < MIN_PAIRS or share < MIN_FULL_SHARE:
        return GapChoice(pairs=pairs, full_share=share)
    pos = np.full(stack_logits.shape[0], -1, np.int64)
    pos[np.flatnonzero(ok)] = np.arange(int(ok.sum()))
    fits: dict[float, tuple[list[float], list[float]]] = {}
    errors: dict[float, float] = {}
    for weight in GAP_WEIGHTS:
        z, slopes, intercepts = _calibrated(blend(s, b, weight), outcomes, pos)
        fits[weight] = (slopes, intercepts)
        errors[weight] = gap_error(sigmoid(z), t, h)[0]
    best = min(errors.values())
    weight = max(w for w, e in errors.items() if e <= best + 1e-12)
    return GapChoice(weight, *fits[weight], errors, pairs, share)


def mixed_logits(choice: GapChoice, stack_logits: F64, broad_logits: F64) -> F64:
    """The recalibrated mixture ``choice`` serves for these stack and broad kNN logits (the
    stack's own logits when it carries no recalibration)."""
    if not choice.slope:
        return stack_logits
    m = blend(stack_logits, broad_logits, choice.weight)
    out: F64 = m * np.asarray(choice.slope) + np.asarray(choice.intercept)
    return out


def fold_into_stack(
    weights: F64, bias: F64, choice: GapChoice, broad_block: int
) -> tuple[F64, F64]:
    """Stack weights (L·A, A) and bias (A,) whose logits equal the recalibrated
    :func:`blend` of the original stack's logits and the broad kNN logits, which are block
    ``broad_block`` of the stack's inputs (columns ``broad_block·A … broad_block·A + A − 1``).
    Unchanged when ``choice`` carries no recalibration."""
    if not choice.slope:
        return weights, bias
    a_n = bias.shape[0]
    level = np.full((a_n, a_n), 1.0 / a_n)
    centre = np.eye(a_n) - level
    keep = level + choice.weight * centre
    new_w: F64 = weights @ keep
    new_w[broad_block * a_n : (broad_block + 1) * a_n] += (1.0 - choice.weight) * centre
    slope = np.asarray(choice.slope)
    new_b: F64 = (bias @ keep) * slope + np.asarray(choice.intercept)
    return new_w * slope, new_b


__all__ = [
    "GAP_WEIGHTS",
    "MIN_FULL_SHARE",
    "MIN_PAIRS",
    "ArmOutcomes",
    "GapChoice",
    "blend",
    "choose_gap_weight",
    "fold_into_stack",
    "gap_error",
    "mixed_logits",
    "recalibrate",
]
