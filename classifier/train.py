"""Train the predictor from outcome records: success, output tokens and cost per arm.

Success is a stack of four learners, each tuned by cross-validation (folds by prompt, or
exact leave-one-out) inside :func:`train`, never on the held-apart prompts:

* ``linear``: ridge regression of the (weighted mean) score on standardised features
  (embedding plus text features), penalty by leave-one-out error (``classifier.ridge``);
* ``knn`` / ``broad``: cosine nearest neighbours on the prompt embeddings, predicting
  every arm at once from the neighbours' observed scores (smoothed towards the arm's
  mean with ``PRIOR_WEIGHT`` pseudo-observations); k from ``K_GRID`` by out-of-fold log
  loss, plus a broad neighbourhood of ``BROAD_K`` that captures the task level; large
  reference sets are compared in their top singular directions (:func:`knn_projection`);
* ``network``: one hidden layer, one output per arm, trained on every observed
  (prompt, arm) cell (``classifier.mlp_head``), epochs by out-of-fold log loss;
* ``stack``: a logistic regression on the learners' out-of-fold logits that both
  combines and calibrates them; its form (shared or per-arm weights, with or without the
  other arms' logits) is chosen by cross-validated log loss;
* ``gaps``: the served scores keep the stack's level per prompt and mix its gaps between
  arms with the broad neighbourhood's, in the proportion that minimises the out-of-fold
  error of the predicted score differences (``classifier.gap_blend``), folded into the
  stack's weights;
* ``cells``: task × difficulty cells (``classifier.cells``), whose mean scores are mixed
  into the served probability with the weight that minimises the same out-of-fold gap
  error (0 when the cells do not help).

Graded scores in [0, 1] are used as they are (fractional targets); logged records with a
``propensity`` are weighted by 1 / propensity (floored at 0.01). Output tokens per sample
(``output_tokens`` / k for ``vote@k``/``best@k``): ridge on log tokens, moved by the median
of its leave-one-out residuals so that the estimate is the median answer length; the high
estimate is the 90th percentile of the same residuals; arms without token counts get a
constant ``DEFAULT_TOKENS`` and are marked as not observed. Cost per call: ridge on
``log1p(cost in micro-dollars)``, so real per-query costs are predicted directly.

``test_fraction`` of the prompts (seeded, by prompt, stratified by task and per-arm
success) is held apart to measure the metrics stored with the model; with ``refit`` the
shipped model is then fitted again on all prompts, its hyper-parameters chosen again by the
same procedure. Deterministic for a given seed.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classifier import metrics as M
from classifier.cells import CellModel, cells_oof, choose_cells_weight, fit_cells
from classifier.gap_blend import GapChoice, choose_gap_weight, fold_into_stack, mixed_logits
from classifier.links import logit, sigmoid
from classifier.mlp_head import MlpHead, fit_mlp
from classifier.outcomes_io import OutcomeRecord
from classifier.ridge import Linear, ridge_loo
from router.core.types import Arm, Price
from router.errors import InvalidRequest

Featurize = Callable[[Sequence[str]], NDArray[np.float32]]
Progress = Callable[[str, float], None]
F64 = NDArray[np.float64]

ALPHA_GRID: tuple[float, ...] = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0, 1e4, 3e4, 1e5)
K_GRID: tuple[int, ...] = (10, 20, 40, 80)
BROAD_K = 200
BROAD_BLOCK = 2  # the broad kNN's logits are the third block of the stack's inputs
STACK_C = 1.0
PRIOR_WEIGHT = 2.0
N_FOLDS = 5
TOKENS_HI_QUANTILE = 0.9
MIN_PROPENSITY = 0.01
DEFAULT_TOKENS = 256.0
MAX_KNN_REFERENCE = 12000
KNN_SCAN_BUDGET = 1_000_000
_K_RE = re.compile(r"^(?:vote|best|short)@(\d+)$")


def samples_per_call(arm: str) -> int:
    """k for ``vote@k``/``best@k``/``short@k`` arms (k samples of one prompt), else 1."""
    m = _K_RE.match(Arm.parse(arm).strategy)
    return int(m.group(1)) if m else 1


@dataclass
class KnnModel:
    """Cosine kNN over unit reference rows; per-arm score sums and counts of each row.

    Reference rows are rounded to float16 (the precision they are stored with in ONNX).
    With a ``projection`` (F, d) the comparison is made in that d-dimensional subspace
    (the unit rows projected, then made unit again), see :func:`knn_projection`.
    """

    reference: NDArray[np.float32]
    sums: NDArray[np.float32]
    counts: NDArray[np.float32]
    prior: NDArray[np.float32]
    k: int
    broad_k: int
    columns: list[int]
    on_scaled: bool
    projection: NDArray[np.float32] | None = None

    def predict(self, x: NDArray[np.float32]) -> tuple[F64, F64]:
        """Smoothed mean scores of the k and of the ``broad_k`` nearest rows, each (N, A)."""
        q = self.query(x)
        n_ref = self.reference.shape[0]
        k, kb = min(self.k, n_ref), min(self.broad_k, n_ref)
        near = np.zeros((q.shape[0], self.sums.shape[1]))
        broad = np.zeros_like(near)
        for start in range(0, q.shape[0], 1024):
            sim = q[start : start + 1024] @ self.reference.T
            for kk, out in ((k, near), (kb, broad)):
                idx = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
                s = self.sums[idx].sum(axis=1, dtype=np.float64)
                c = self.counts[idx].sum(axis=1, dtype=np.float64)
                out[start : start + 1024] = (s + PRIOR_WEIGHT * self.prior) / (c + PRIOR_WEIGHT)
        return near, broad

    def query(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """The unit rows the references are compared with (projected when there is a
        projection)."""
        q = unit_rows(np.asarray(x, np.float32)[:, self.columns])
        if self.projection is not None:
            q = unit_rows(q @ self.projection)
        return q


def unit_rows(x: NDArray[np.float32]) -> NDArray[np.float32]:
    norm = np.sqrt(np.sum(x.astype(np.float32) ** 2, axis=1, keepdims=True))
    return np.asarray(x / np.maximum(norm, 1e-12), dtype=np.float32)


@dataclass
class Stack:
    """``sigmoid(inputs @ weights + bias)``: inputs (N, L*A) are L learners' logits per
    arm, ``weights`` is (L*A, A); ``kind`` says which form CV chose (see _fit_stack)."""

    weights: F64
    bias: F64
    kind: str
    cv_log_loss: dict[str, float]
    gap: GapChoice = field(default_factory=GapChoice)
    """The gap mix (``classifier.gap_blend``); ``weights`` and ``bias`` already include it."""


STACK_KINDS = ("pooled", "per_arm", "per_arm_cross")


def _stack_design(
    stack_in: F64, arm_rows: Sequence[_ArmRows], kind: str, j: int
) -> tuple[F64, NDArray[np.int64], F64, NDArray[np.bool_]]:
    """Inputs, labels, weights and kept-row mask of arm ``j``'s rows for a stack kind."""
    n_arms = len(arm_rows)
    n_learners = stack_in.shape[1] // n_arms
    ar = arm_rows[j]
    if kind == "per_arm_cross":
        feats = stack_in[ar.rows]
    else:
        feats = stack_in[ar.rows][:, [m * n_arms + j for m in range(n_learners)]]
    ok = ~np.isnan(feats).any(axis=1)
    if kind == "pooled":
        onehot = np.zeros((int(ok.sum()), n_arms))
        onehot[:, j] = 1.0
        return np.concatenate([feats[ok], onehot], axis=1), ar.y[ok], ar.w[ok], ok
    return feats[ok], ar.y[ok], ar.w[ok], ok


def _stack_fits(
    stack_in: F64, arm_rows: Sequence[_ArmRows], kind: str, keep: NDArray[np.bool_] | None
) -> list[Any]:
    """Fitted logistic model(s) of a stack kind on prompt rows where ``keep`` (or all)."""
    from sklearn.linear_model import LogisticRegression

    def fit(x: F64, y: NDArray[np.int64], w: F64, intercept: bool) -> Any:
        return LogisticRegression(C=STACK_C, fit_intercept=intercept, max_iter=5000, tol=1e-8).fit(
            x, y, sample_weight=w
        )

    parts = []
    for j, ar in enumerate(arm_rows):
        x, y, w, ok = _stack_design(stack_in, arm_rows, kind, j)
        sel = np.ones(len(y), bool) if keep is None else keep[ar.rows[ok]]
        parts.append((x[sel], y[sel], w[sel]))
    if kind == "pooled":
        return [
            fit(
                np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]),
                np.concatenate([p[2] for p in parts]),
                False,
            )
        ]
    return [fit(x, y, w, True) for x, y, w in parts]


def _stack_logits(
    fits: Sequence[Any], stack_in: F64, arm_rows: Sequence[_ArmRows], kind: str, j: int
) -> tuple[F64, NDArray[np.int64], F64, NDArray[np.int64]]:
    x, y, w, ok = _stack_design(stack_in, arm_rows, kind, j)
    clf = fits[0] if kind == "pooled" else fits[j]
    return clf.decision_function(x), y, w, arm_rows[j].rows[ok]


def _stack_kind_fits(
    stack_in: F64, arm_rows: Sequence[_ArmRows], kind: str, folds: NDArray[np.int64]
) -> bool:
    """Whether every arm has rows of both labels for a stack kind, in every CV training part.

    ``per_arm_cross`` needs every arm's logits on a prompt, so on logged traffic (one arm
    per prompt) it has no rows at all and is not a candidate.
    """
    for j, ar in enumerate(arm_rows):
        _, y, w, ok = _stack_design(stack_in, arm_rows, kind, j)
        fold_of = folds[ar.rows[ok]]
        for f in range(-1, N_FOLDS):
            sel = (fold_of != f) & (w > 0)
            if len(np.unique(y[sel])) < 2:
                return False
    return True


CROSS_MIN_COVERAGE = 0.25


def _cross_covers(stack_in: F64, arm_rows: Sequence[_ArmRows]) -> bool:
    """Whether ``per_arm_cross``, which needs every arm's logits on a prompt, keeps at least
    ``CROSS_MIN_COVERAGE`` of each arm's rows that ``per_arm`` keeps. Below that, its
    cross-validated log loss is measured on a small minority of the prompts the other forms
    are measured on (those with every arm observed), and its fit rests on them alone while
    it predicts every prompt: on ZeroEval with one arm observed on 10% of the prompts it was
    chosen on every fold and left another arm's ECE at 0.070 (0.020 without it)."""
    for j in range(len(arm_rows)):
        cross = int(_stack_design(stack_in, arm_rows, "per_arm_cross", j)[3].sum())
        own = int(_stack_design(stack_in, arm_rows, "per_arm", j)[3].sum())
        if cross < CROSS_MIN_COVERAGE * own:
            return False
    return True


def _fit_stack(
    stack_in: F64, arm_rows: Sequence[_ArmRows], folds: NDArray[np.int64]
) -> tuple[Stack, F64]:
    """The stacking logistic regression, and its out-of-fold logits (N, A; NaN where an
    arm has no record). Its form is chosen by CV log loss among ``pooled`` (one weight per
    learner shared by all arms, an intercept per arm), ``per_arm`` (per arm, its own
    learners' logits) and ``per_arm_cross`` (per arm, every arm's logits)."""
    n_arms = len(arm_rows)
    n_learners = stack_in.shape[1] // n_arms
    losses: dict[str, float] = {}
    oof: dict[str, F64] = {}
    for kind in STACK_KINDS:
        if not _stack_kind_fits(stack_in, arm_rows, kind, folds):
            continue
        if kind == "per_arm_cross" and not _cross_covers(stack_in, arm_rows):
            continue
        total, weight = 0.0, 0.0
        oof[kind] = np.full((stack_in.shape[0], n_arms), np.nan)
        for f in range(N_FOLDS):
            fits = _stack_fits(stack_in, arm_rows, kind, folds != f)
            for j in range(n_arms):
                lg, y, w, rows = _stack_logits(fits, stack_in, arm_rows, kind, j)
                te = folds[rows] == f
                ll = np.logaddexp(0.0, lg[te]) - y[te] * lg[te]
                total += float(np.sum(w[te] * ll))
                weight += float(np.sum(w[te]))
                oof[kind][rows[te], j] = lg[te]
        losses[kind] = total / max(weight, 1e-12)
    if not losses:
        raise InvalidRequest(
            "too few outcomes to fit the stacking model: some arm has records of only one "
            "outcome in a cross-validation fold; log more traffic or add a benchmark table"
        )
    kind = min(losses, key=lambda k: losses[k])
    fits = _stack_fits(stack_in, arm_rows, kind, None)
    weights = np.zeros((n_learners * n_arms, n_arms))
    bias = np.zeros(n_arms)
    for j in range(n_arms):
        if kind == "pooled":
            coef = fits[0].coef_.reshape(-1)
            for m in range(n_learners):
                weights[m * n_arms + j, j] = coef[m]
            bias[j] = coef[n_learners + j]
        elif kind == "per_arm":
            for m in range(n_learners):
                weights[m * n_arms + j, j] = fits[j].coef_.reshape(-1)[m]
            bias[j] = float(fits[j].intercept_[0])
        else:
            weights[:, j] = fits[j].coef_.reshape(-1)
            bias[j] = float(fits[j].intercept_[0])
    return Stack(weights, bias, kind, losses), oof[kind]


@dataclass
class ArmModel:
    """The fitted models of one arm (all act on standardised features)."""

    arm: str
    classifier: Any
    regressor: Any | None
    cost_regressor: Any
    c: float
    alpha: float
    cost_alpha: float
    tokens_hi_log_offset: float
    samples: int
    tokens_observed: bool


@dataclass
class TrainedModel:
    """What :func:`train` returns; exported by ``classifier.onnx_export``."""

    arms: list[str]
    feature_names: tuple[str, ...]
    scaler: Any
    per_arm: dict[str, ArmModel]
    knn: KnnModel
    mlp: MlpHead
    cells: CellModel
    stack: Stack
    seed: int
    cells_weight: float = 0.0
    """ω of ``p = (1 − ω)·stack + ω·cells`` (``classifier.cells``), chosen by CV."""
    cells_errors: dict[float, float] = field(default_factory=dict)
    test_fraction: float = 0.2
    refit: bool = True
    metrics: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    prices: dict[str, dict[str, float]] = field(default_factory=dict)

    def knn_input(self, x: NDArray[np.float32], z: F64) -> NDArray[np.float32]:
        """What the kNN and the cells read for raw features ``x`` scaled to ``z``: the
        scaled features when the kNN has no embedding columns, else the raw ones."""
        return z.astype(np.float32) if self.knn.on_scaled else x

    def base_logits(self, x: NDArray[np.float32], z: F64 | None = None) -> F64:
        """The stack's inputs: linear scores, near and broad kNN logits, network logits
        (N, 4A); ``z`` is ``x`` scaled, when the caller already has it."""
        x = np.asarray(x, dtype=np.float32)
        z = self.scaler.transform(x) if z is None else z
        lr = np.column_stack([self.per_arm[a].classifier.predict(z) for a in self.arms]).astype(
            np.float64
        )
        near, broad = self.knn.predict(self.knn_input(x, z))
        return np.concatenate([lr, logit(near), logit(broad), self.mlp.logits(z)], axis=1)

    def predict_all(self, x: NDArray[np.float32]) -> tuple[F64, F64, F64]:
        """(p_success, log tokens per sample, cost USD per call), each (N, A)."""
        x = np.asarray(x, dtype=np.float32)
        z = self.scaler.transform(x)
        s = self.base_logits(x, z)
        p = sigmoid(s @ self.stack.weights + self.stack.bias)
        if self.cells_weight:
            q = self.knn.query(self.knn_input(x, z))
            p = (1.0 - self.cells_weight) * p + self.cells_weight * self.cells.predict(q)
        t = np.column_stack([self._tokens(a, z) for a in self.arms]).astype(np.float64)
        c = np.column_stack([self.per_arm[a].cost_regressor.predict(z) for a in self.arms]).astype(
            np.float64
        )
        return p, t, np.maximum(np.expm1(c), 0.0) / 1e6

    def predict_arrays(self, x: NDArray[np.float32]) -> tuple[F64, F64]:
        """(p_success, log tokens per sample), each (N, A), computed with scikit-learn."""
        p, t, _ = self.predict_all(x)
        return p, t

    def _tokens(self, arm: str, z: F64) -> F64:
        reg = self.per_arm[arm].regressor
        if reg is None:
            return np.full(z.shape[0], math.log(DEFAULT_TOKENS))
        out: F64 = np.asarray(reg.predict(z), np.float64)
        return out


@dataclass
class _Table:
    """Prompts and per-(prompt, arm) aggregates of a record set."""

    ids: list[str]
    texts: list[str]
    index: dict[str, int]


def _prompts(records: Sequence[OutcomeRecord]) -> _Table:
    ids: list[str] = []
    texts: list[str] = []
    index: dict[str, int] = {}
    for r in records:
        if r.prompt_id not in index:
            index[r.prompt_id] = len(ids)
            ids.append(r.prompt_id)
            texts.append(r.prompt)
    return _Table(ids, texts, index)


Stratum = tuple[str, int, tuple[int, ...]]


def prompt_strata(records: Sequence[OutcomeRecord]) -> dict[str, Stratum]:
    """Each prompt's stratum for splitting: its task, how many arms succeeded, and which.

    An arm counts as a success on a prompt when its mean score there is at least 0.5; arms
    are taken in sorted order, and an arm with no record for the prompt counts as -1.
    """
    arms = sorted({r.arm for r in records})
    col = {a: i for i, a in enumerate(arms)}
    sums: dict[str, list[float]] = {}
    counts: dict[str, list[int]] = {}
    task: dict[str, str] = {}
    for r in records:
        if r.prompt_id not in sums:
            sums[r.prompt_id] = [0.0] * len(arms)
            counts[r.prompt_id] = [0] * len(arms)
            task[r.prompt_id] = r.task or ""
        sums[r.prompt_id][col[r.arm]] += r.score
        counts[r.prompt_id][col[r.arm]] += 1
    out: dict[str, Stratum] = {}
    for pid, total in sums.items():
        bits = tuple(
            -1 if n == 0 else int(t / n >= 0.5) for t, n in zip(total, counts[pid], strict=True)
        )
        out[pid] = (task[pid], sum(b for b in bits if b > 0), bits)
    return out


def split_prompts(
    prompt_ids: Sequence[str],
    seed: int,
    test_fraction: float,
    strata: Mapping[str, Stratum] | None = None,
) -> set[str]:
    """The held-out prompt ids, ``ceil(test_fraction × prompts)`` of them.

    Without ``strata`` the ids are a seeded permutation of the sorted ids. With them (from
    ``prompt_strata``) the split is stratified: prompts are ordered by stratum, randomly
    within it, and every 1/test_fraction-th one is held out from a random start, so each
    task and each arm's success rate is shared between train and test in proportion.
    """
    ordered = sorted(set(prompt_ids))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(ordered))
    n_test = math.ceil(test_fraction * len(ordered)) if test_fraction > 0 else 0
    if strata is None or n_test == 0:
        return {ordered[i] for i in perm[:n_test]}
    rank = np.empty(len(ordered), dtype=np.int64)
    rank[perm] = np.arange(len(ordered))
    by_stratum = sorted(range(len(ordered)), key=lambda i: (strata[ordered[i]], int(rank[i])))
    step = len(ordered) / n_test
    start = float(rng.random()) * step
    picks = {by_stratum[min(len(ordered) - 1, int(start + j * step))] for j in range(n_test)}
    return {ordered[i] for i in picks}


def fold_prompts(
    prompt_ids: Sequence[str], seed: int, folds: int, strata: Mapping[str, Stratum]
) -> dict[str, int]:
    """Each distinct prompt's fold (0 … ``folds``-1) for cross-validated evaluation,
    stratified as :func:`split_prompts` is: prompts ordered by stratum (randomly within it)
    are dealt to the folds in turn from a random first fold, so every fold holds each task
    and each arm's success rate in proportion. Independent of the order of ``prompt_ids``."""
    ordered = sorted(set(prompt_ids))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(ordered))
    rank = np.empty(len(ordered), dtype=np.int64)
    rank[perm] = np.arange(len(ordered))
    by_stratum = sorted(range(len(ordered)), key=lambda i: (strata[ordered[i]], int(rank[i])))
    first = int(rng.integers(folds))
    return {ordered[i]: (at + first) % folds for at, i in enumerate(by_stratum)}


def _folds(prompt_ids: Sequence[str], seed: int) -> NDArray[np.int64]:
    """Cross-validation fold of each prompt (in the given order), independent of that order."""
    ordered = sorted(prompt_ids)
    fold = np.random.default_rng(seed + 1).permutation(len(ordered)) % N_FOLDS
    of_id = dict(zip(ordered, fold.tolist(), strict=True))
    return np.asarray([of_id[i] for i in prompt_ids], dtype=np.int64)


def _weight(r: OutcomeRecord) -> float:
    return 1.0 if r.propensity is None else 1.0 / max(r.propensity, MIN_PROPENSITY)


@dataclass
class _ArmRows:
    """Weighted classification rows of one arm: prompt row, label, weight."""

    rows: NDArray[np.int64]
    y: NDArray[np.int64]
    w: F64


def _classification_rows(recs: Sequence[OutcomeRecord], index: Mapping[str, int]) -> _ArmRows:
    rows: list[int] = []
    labels: list[int] = []
    weights: list[float] = []
    for r in recs:
        base = _weight(r)
        for label, w in ((1, r.score), (0, 1.0 - r.score)):
            if w > 0:
                rows.append(index[r.prompt_id])
                labels.append(label)
                weights.append(base * w)
    return _ArmRows(
        np.asarray(rows, np.int64), np.asarray(labels, np.int64), np.asarray(weights, np.float64)
    )


def _per_prompt(
    recs: Sequence[OutcomeRecord], index: Mapping[str, int], value: Callable[[OutcomeRecord], float]
) -> tuple[NDArray[np.int64], F64, F64]:
    """(prompt rows, weighted mean of ``value``, total weight) over an arm's records."""
    num: dict[int, float] = defaultdict(float)
    den: dict[int, float] = defaultdict(float)
    for r in recs:
        i, w = index[r.prompt_id], _weight(r)
        num[i] += w * value(r)
        den[i] += w
    rows = np.asarray(sorted(num), np.int64)
    wsum = np.asarray([den[i] for i in rows.tolist()])
    return rows, np.asarray([num[i] for i in rows.tolist()]) / wsum, wsum


def tokens_per_sample(r: OutcomeRecord, k: int) -> float:
    """Output tokens per sample: over the samples the record says were drawn, else ``k``."""
    return (r.output_tokens or 0) / (r.samples or k)


def _log_tokens_per_sample(k: int) -> Callable[[OutcomeRecord], float]:
    return lambda r: math.log(max(tokens_per_sample(r, k), 1.0))


def _ridge_heads(
    z: F64,
    targets: Mapping[str, tuple[NDArray[np.int64], F64, F64]],
    alphas: Sequence[float],
) -> dict[str, tuple[Linear, F64]]:
    """Per arm: ridge on its rows with LOO-chosen alpha, and the LOO predictions.

    Arms with the same rows and weights share one decomposition."""
    groups: dict[bytes, list[str]] = defaultdict(list)
    for a, (rows, _, w) in targets.items():
        groups[rows.tobytes() + b"|" + w.tobytes()].append(a)
    out: dict[str, tuple[Linear, F64]] = {}
    for names in groups.values():
        rows, _, w = targets[names[0]]
        y = np.column_stack([targets[a][1] for a in names])
        fit = ridge_loo(z[rows], y, w, alphas)
        for t, a in enumerate(names):
            out[a] = (fit.models[t], fit.loo[:, t])
    return out


def _score_tables(
    recs: Sequence[OutcomeRecord], index: Mapping[str, int], arms: Sequence[str], n: int
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Weighted score sums and weights per (prompt row, arm)."""
    col = {a: j for j, a in enumerate(arms)}
    sums = np.zeros((n, len(arms)), np.float32)
    counts = np.zeros((n, len(arms)), np.float32)
    for r in recs:
        w = _weight(r)
        sums[index[r.prompt_id], col[r.arm]] += w * r.score
        counts[index[r.prompt_id], col[r.arm]] += w
    return sums, counts


def _knn_columns(names: Sequence[str]) -> list[int]:
    emb = [i for i, n in enumerate(names) if n.startswith("emb_")]
    return emb or list(range(len(names)))


def _knn_space(x: NDArray[np.float32], scaler: Any, names: Sequence[str]) -> NDArray[np.float32]:
    """Rows the kNN compares: the embedding columns, or all standardised features."""
    cols = _knn_columns(names)
    if any(n.startswith("emb_") for n in names):
        return unit_rows(np.asarray(x, np.float32)[:, cols])
    return unit_rows(np.asarray(scaler.transform(x), np.float32))


def knn_projection(reference: NDArray[np.float32]) -> NDArray[np.float32] | None:
    """A projection (F, d) onto the reference rows' top d right singular vectors, or None.

    Served, the kNN compares one prompt with every reference row: a scan of rows × columns
    values that, at 10,000 rows of 384, took 0.35 ms of a 0.53 ms prediction on 2 cores
    (``benchmarks/predictor.py``). The projection keeps
    that scan within ``KNN_SCAN_BUDGET`` values (d = budget // rows, at least 32); the top
    singular directions of unit rows are the ones that preserve their dot products best.
    Small reference sets are compared in full (None).
    """
    rows, dims = reference.shape
    keep = max(32, KNN_SCAN_BUDGET // max(rows, 1))
    if keep >= dims:
        return None
    _, _, vt = np.linalg.svd(np.asarray(reference, np.float64), full_matrices=False)
    return np.ascontiguousarray(vt[:keep].T, dtype=np.float32)


def _knn_oof(
    space: NDArray[np.float32],
    sums: NDArray[np.float32],
    counts: NDArray[np.float32],
    prior: NDArray[np.float32],
    train_rows: NDArray[np.int64],
    folds: NDArray[np.int64],
    ks: Sequence[int],
) -> dict[int, F64]:
    """Out-of-fold kNN predictions (rows of ``train_rows``) for every k at once."""
    kmax = max(ks)
    out = {k: np.full((len(train_rows), sums.shape[1]), np.nan) for k in ks}
    fold_of = folds[train_rows]
    for f in range(N_FOLDS):
        te = np.flatnonzero(fold_of == f)
        tr = train_rows[fold_of != f]
        if te.size == 0 or tr.size == 0:
            continue
        ref = space[tr]
        kk = min(kmax, tr.size)
        for start in range(0, te.size, 1024):
            part = te[start : start + 1024]
            sim = space[train_rows[part]] @ ref.T
            top = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]
            order = np.argsort(-np.take_along_axis(sim, top, axis=1), axis=1, kind="stable")
            top = tr[np.take_along_axis(top, order, axis=1)]
            cs = np.cumsum(sums[top], axis=1, dtype=np.float64)
            cc = np.cumsum(counts[top], axis=1, dtype=np.float64)
            for k in ks:
                j = min(k, kk) - 1
                out[k][part] = (cs[:, j] + PRIOR_WEIGHT * prior) / (cc[:, j] + PRIOR_WEIGHT)
    return out


def _knn_loss(pred: F64, sums: NDArray[np.float32], counts: NDArray[np.float32]) -> float:
    """Weighted log loss of predictions against graded score sums and weights."""
    q = np.clip(pred, 1e-6, 1 - 1e-6)
    ok = ~np.isnan(q)
    ll = -(sums * np.log(q) + (counts - sums) * np.log(1 - q))
    return float(ll[ok].sum() / max(float(counts[ok].sum()), 1e-12))


@dataclass
class _Hyper:
    """Hyper-parameters chosen by cross-validation."""

    c: dict[str, float] = field(default_factory=dict)
    alpha: dict[str, float] = field(default_factory=dict)
    cost_alpha: dict[str, float] = field(default_factory=dict)
    k: int = K_GRID[0]


def _smooth_if_constant(recs: list[OutcomeRecord]) -> list[OutcomeRecord]:
    """An arm whose every score is the same value c (a tier that never failed in the logs)
    gets the Krichevsky-Trofimov estimate (c·m + ½) / (m + 1) over its m records instead:
    the evidence for "always" grows with m but never becomes certainty, and every learner
    then has both outcomes to weigh."""
    first = recs[0].score
    if any(r.score != first for r in recs):
        return recs
    m = len(recs)
    smoothed = (first * m + 0.5) / (m + 1)
    return [replace(r, score=smoothed) for r in recs]


def _fit(
    x: NDArray[np.float32],
    names: tuple[str, ...],
    table: _Table,
    recs: Sequence[OutcomeRecord],
    arms: list[str],
    seed: int,
    progress: Progress,
) -> TrainedModel:
    """Fit every part on the prompts of ``recs`` (all rows of ``x`` are featurized)."""
    from sklearn.preprocessing import StandardScaler

    by_arm: dict[str, list[OutcomeRecord]] = defaultdict(list)
    for r in recs:
        by_arm[r.arm].append(r)
    for a in arms:
        if not by_arm[a]:
            raise InvalidRequest(f"arm {a!r} has no training records")
        by_arm[a] = _smooth_if_constant(by_arm[a])
    rows = np.asarray(sorted({table.index[r.prompt_id] for r in recs}), np.int64)
    scaler = StandardScaler().fit(x[rows])
    z = scaler.transform(x).astype(np.float64)
    folds = _folds(table.ids, seed)
    n, a_n = len(table.ids), len(arms)
    steps = a_n + 6
    done = 0

    def step(what: str) -> None:
        nonlocal done
        done += 1
        progress(what, done / steps)

    score_t = {a: _per_prompt(by_arm[a], table.index, lambda r: r.score) for a in arms}
    linear = _ridge_heads(z, score_t, ALPHA_GRID)
    lin_oof = np.full((n, a_n), np.nan)
    hyper = _Hyper()
    for j, a in enumerate(arms):
        lin_oof[score_t[a][0], j] = linear[a][1]
        hyper.c[a] = linear[a][0].alpha
    step("linear success models")

    sums, counts = _score_tables(recs, table.index, arms, n)
    prior = (sums[rows].sum(axis=0) / np.maximum(counts[rows].sum(axis=0), 1e-12)).astype(
        np.float32
    )
    space = _knn_space(x, scaler, names)
    ref_rows = rows
    if rows.size > MAX_KNN_REFERENCE:
        pick = np.random.default_rng(seed + 2).choice(rows.size, MAX_KNN_REFERENCE, replace=False)
        ref_rows = rows[np.sort(pick)]
    projection = knn_projection(space[ref_rows])
    if projection is not None:
        space = unit_rows(space @ projection)
    oof = _knn_oof(space, sums, counts, prior, rows, folds, (*K_GRID, BROAD_K))
    losses = {k: _knn_loss(oof[k], sums[rows], counts[rows]) for k in K_GRID}
    hyper.k = min(K_GRID, key=lambda k: (losses[k], k))
    knn = KnnModel(
        reference=space[ref_rows].astype(np.float16).astype(np.float32),
        sums=sums[ref_rows],
        counts=counts[ref_rows],
        prior=prior,
        k=min(hyper.k, ref_rows.size),
        broad_k=min(BROAD_K, ref_rows.size),
        columns=_knn_columns(names),
        on_scaled=not any(n.startswith("emb_") for n in names),
        projection=projection,
    )
    knn_oof = np.full((n, a_n), np.nan)
    knn_oof[rows] = oof[hyper.k]
    broad_oof = np.full((n, a_n), np.nan)
    broad_oof[rows] = oof[BROAD_K]
    step("neighbours")

    target = np.where(counts > 0, sums / np.maximum(counts, 1e-12), 0.0)
    mlp, mlp_rows_oof = fit_mlp(z[rows], target[rows], counts[rows], folds[rows], seed)
    mlp_oof = np.full((n, a_n), np.nan)
    mlp_oof[rows] = mlp_rows_oof
    step("network")
    cell_oof = np.full((n, a_n), np.nan)
    cell_oof[rows] = cells_oof(space, sums, counts, prior, rows, folds, seed)
    cells = fit_cells(space, sums, counts, prior, rows, seed)
    stack_in = np.concatenate([lin_oof, logit(knn_oof), logit(broad_oof), mlp_oof], axis=1)
    tok_t: dict[str, tuple[NDArray[np.int64], F64, F64]] = {}
    for a in arms:
        k_samples = samples_per_call(a)
        with_tok = [r for r in by_arm[a] if r.output_tokens is not None]
        if with_tok:
            tok_t[a] = _per_prompt(with_tok, table.index, _log_tokens_per_sample(k_samples))
    tokens = _ridge_heads(z, tok_t, ALPHA_GRID)
    step("token models")
    cost_t = {
        a: _per_prompt(by_arm[a], table.index, lambda r: math.log1p(r.cost_usd * 1e6)) for a in arms
    }
    costs = _ridge_heads(z, cost_t, ALPHA_GRID)
    step("cost models")
    arm_rows = [_classification_rows(by_arm[a], table.index) for a in arms]
    stack, stack_oof = _fit_stack(stack_in, arm_rows, folds)
    stack.gap = choose_gap_weight(
        stack_oof,
        logit(broad_oof),
        target,
        counts > 0,
        [(ar.rows, ar.y, ar.w) for ar in arm_rows],
    )
    stack.weights, stack.bias = fold_into_stack(stack.weights, stack.bias, stack.gap, BROAD_BLOCK)
    served_oof = sigmoid(mixed_logits(stack.gap, stack_oof, logit(broad_oof)))
    cells_choice = choose_cells_weight(served_oof, cell_oof, target, counts > 0)
    step("stack")
    per_arm: dict[str, ArmModel] = {}
    for a in arms:
        offset = 0.0
        regressor: Linear | None = None
        if a in tokens:
            # The ridge fits the mean of log tokens; output lengths are skewed in log space
            # (a few very short answers), so that mean sits below the typical answer. The
            # median of the leave-one-out residuals moves it onto the median.
            resid = tok_t[a][1] - tokens[a][1]
            shift = float(np.median(resid))
            regressor = replace(tokens[a][0], intercept_=tokens[a][0].intercept_ + shift)
            offset = max(float(np.quantile(resid, TOKENS_HI_QUANTILE)) - shift, 0.0)
            hyper.alpha[a] = tokens[a][0].alpha
        hyper.cost_alpha[a] = costs[a][0].alpha
        per_arm[a] = ArmModel(
            arm=a,
            classifier=linear[a][0],
            regressor=regressor,
            cost_regressor=costs[a][0],
            c=linear[a][0].alpha,
            alpha=regressor.alpha if regressor is not None else 0.0,
            cost_alpha=costs[a][0].alpha,
            tokens_hi_log_offset=offset,
            samples=samples_per_call(a),
            tokens_observed=a in tokens,
        )
    model = TrainedModel(
        arms=arms,
        feature_names=names,
        scaler=scaler,
        per_arm=per_arm,
        knn=knn,
        mlp=mlp,
        cells=cells,
        stack=stack,
        seed=seed,
        cells_weight=cells_choice.weight,
        cells_errors=cells_choice.errors,
    )
    step("done")
    return model


def _no_progress(what: str, fraction: float) -> None:
    return None


def train(
    records: Sequence[OutcomeRecord],
    *,
    seed: int,
    arms: list[str] | None = None,
    featurize: Featurize | None = None,
    feature_names: Sequence[str] | None = None,
    prices: Mapping[str, Price] | None = None,
    test_fraction: float = 0.2,
    refit: bool = False,
    progress: Progress | None = None,
) -> TrainedModel:
    """Fit on a seeded train split, measure on the held-out prompts, optionally refit on all.

    ``featurize`` maps prompt texts to predictor input rows (default: the ONNX embedder
    with :mod:`classifier.long_prompts` plus ``classifier.features``); ``prices`` (per
    tier) are recorded in the metadata; ``progress(what, fraction)`` is called as
    training advances.
    """
    if not records:
        raise InvalidRequest("no outcome records to train on")
    arm_list = list(arms) if arms is not None else sorted({r.arm for r in records})
    for a in arm_list:
        Arm.parse(a)
    if len(arm_list) < 1:
        raise InvalidRequest("no arms to train")
    missing = [a for a in arm_list if not any(r.arm == a for r in records)]
    if missing:
        raise InvalidRequest(f"no outcome records for arm(s) {missing}")
    if not 0.0 <= test_fraction < 1.0:
        raise InvalidRequest("test_fraction must be in [0, 1)")
    report = progress or _no_progress
    wanted = set(arm_list)
    used = [r for r in records if r.arm in wanted]
    off_scale = [r.score for r in used if not 0.0 <= r.score <= 1.0]
    if off_scale:
        raise InvalidRequest(
            f"scores must be in [0, 1] here, got {off_scale[0]!r}; map them first "
            "(classifier.score_scale, as ttc-router train does)"
        )
    table = _prompts(used)

    if featurize is None:
        featurize, default_names = default_featurizer()
        feature_names = feature_names or default_names
    report("featurizing prompts", 0.0)
    x = np.asarray(featurize(table.texts), dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != len(table.ids):
        raise InvalidRequest(f"featurize returned shape {x.shape} for {len(table.ids)} prompts")
    names = tuple(feature_names) if feature_names else tuple(f"f{i}" for i in range(x.shape[1]))
    if len(names) != x.shape[1]:
        raise InvalidRequest(f"{len(names)} feature names for {x.shape[1]} feature columns")

    test_ids = split_prompts(table.ids, seed, test_fraction, prompt_strata(used))
    train_recs = [r for r in used if r.prompt_id not in test_ids]
    test_recs = [r for r in used if r.prompt_id in test_ids]
    share = 0.5 if refit and test_recs else 1.0

    def part(offset: float) -> Progress:
        return lambda what, f: report(what, offset + share * f)

    model = _fit(x, names, table, train_recs, arm_list, seed, part(0.0))
    metrics: dict[str, Any] = {}
    if test_recs:
        metrics = evaluate_split(model, x, table.index, train_recs, test_recs)
        metrics["fitted_on"] = "training share only"
    if refit and test_recs:
        model = _fit(x, names, table, used, arm_list, seed, part(0.5))
        metrics["shipped_model"] = "refitted on all prompts with hyper-parameters re-chosen by CV"
    model.test_fraction = test_fraction
    model.refit = refit
    model.metrics = metrics
    model.counts = {
        "records": len(used),
        "prompts": len(table.ids),
        "train_prompts": len(table.ids) - len(test_ids),
        "test_prompts": len(test_ids),
        "records_per_arm": {a: sum(1 for r in used if r.arm == a) for a in arm_list},
        "knn_k": model.knn.k,
        "knn_reference_prompts": int(model.knn.reference.shape[0]),
        "knn_dims": int(model.knn.reference.shape[1]),
    }
    model.prices = {
        a: {"input_per_mtok": p.input_per_mtok, "output_per_mtok": p.output_per_mtok}
        for a in arm_list
        if (p := (prices or {}).get(Arm.parse(a).tier)) is not None
    }
    report("done", 1.0)
    return model


def cell_means(
    recs: Sequence[OutcomeRecord], pos: Mapping[str, int], arms: Sequence[str]
) -> tuple[F64, F64, NDArray[np.bool_]]:
    """Mean score and cost per (prompt, arm), and which cells exist."""
    n, a = len(pos), len(arms)
    col = {arm: j for j, arm in enumerate(arms)}
    s, c, k = (np.zeros((n, a)) for _ in range(3))
    for r in recs:
        if r.arm not in col:
            continue
        i, j = pos[r.prompt_id], col[r.arm]
        s[i, j] += r.score
        c[i, j] += r.cost_usd
        k[i, j] += 1
    have = k > 0
    k[~have] = 1
    return s / k, c / k, have


def per_arm_metrics(
    arms: Sequence[str],
    p: F64,
    log_t: F64,
    offsets: Mapping[str, float | F64],
    observed: Mapping[str, bool],
    test_recs: Sequence[OutcomeRecord],
    pos: Mapping[str, int],
) -> dict[str, Any]:
    """Calibration and token accuracy per arm on held-out records; beside each ECE, the
    ECE a perfectly calibrated model would show on the same records (median and 95th
    percentile, ``classifier.uncertainty``). An arm's high-token offset is one number, or
    one per row of ``p`` (predictions pooled from several models)."""
    from classifier.uncertainty import ece_if_calibrated

    out: dict[str, Any] = {}
    for j, a in enumerate(arms):
        recs = [r for r in test_recs if r.arm == a]
        if not recs:
            continue
        pa = np.asarray([p[pos[r.prompt_id], j] for r in recs])
        ya = np.asarray([r.score for r in recs])
        k = samples_per_call(a)
        tok = [
            (pos[r.prompt_id], tokens_per_sample(r, k)) for r in recs if r.output_tokens is not None
        ]
        entry: dict[str, Any] = {
            "n": len(recs),
            "mean_score": float(ya.mean()),
            "mean_p": float(pa.mean()),
            "brier": M.brier(pa, ya),
            "ece": M.ece(pa, ya, 10),
        }
        entry["ece_if_calibrated_median"], entry["ece_if_calibrated_p95"] = ece_if_calibrated(
            pa, 10
        )
        if tok and observed.get(a, True):
            ti = np.asarray([i for i, _ in tok], np.int64)
            actual = np.asarray([v for _, v in tok])
            pred = np.exp(log_t[ti, j])
            off = offsets.get(a, 0.0)
            hi = np.exp(log_t[ti, j] + (off[ti] if isinstance(off, np.ndarray) else off))
            entry["tokens_within_2x"] = M.within_factor(pred, actual, 2.0)
            entry["tokens_hi_coverage"] = M.share_at_or_below(hi, actual)
            entry["median_tokens_actual"] = float(np.median(actual))
            entry["median_tokens_pred"] = float(np.median(pred))
        out[a] = entry
    return out


def evaluate_split(
    model: TrainedModel,
    x: NDArray[np.float32],
    index: Mapping[str, int],
    train_recs: Sequence[OutcomeRecord],
    test_recs: Sequence[OutcomeRecord],
) -> dict[str, Any]:
    """Held-out metrics of ``model`` with every baseline (``classifier.baselines``)."""
    from classifier.evaluate import routing_table

    test_ids = sorted({r.prompt_id for r in test_recs})
    pos = {pid: i for i, pid in enumerate(test_ids)}
    rows = np.asarray([index[pid] for pid in test_ids], np.int64)
    p, log_t, cost = model.predict_all(x[rows])
    out: dict[str, Any] = {
        "split": "held-out prompts",
        "per_arm": per_arm_metrics(
            model.arms,
            p,
            log_t,
            {a: model.per_arm[a].tokens_hi_log_offset for a in model.arms},
            {a: model.per_arm[a].tokens_observed for a in model.arms},
            test_recs,
            pos,
        ),
    }
    train_ids = sorted({r.prompt_id for r in train_recs})
    train_pos = {pid: i for i, pid in enumerate(train_ids)}
    train_rows = np.asarray([index[pid] for pid in train_ids], np.int64)
    routing = routing_table(
        model.arms,
        model.feature_names,
        p,
        cost,
        x[train_rows],
        train_recs,
        train_pos,
        x[rows],
        test_recs,
        pos,
        seed=model.seed,
    )
    if routing is not None:
        out["routing"] = routing
    return out


def embedder_featurizer(embedder: Any, batch: int = 256) -> Featurize:
    """Featurize with an embedder (``embed_batch``/``dim``) plus the text features."""
    from classifier.features import features_for

    def featurize(texts: Sequence[str]) -> NDArray[np.float32]:
        emb = np.zeros((len(texts), embedder.dim), dtype=np.float32)
        for start in range(0, len(texts), batch):
            emb[start : start + batch] = embedder.embed_batch(texts[start : start + batch])
        return features_for(emb, texts)

    return featurize


def default_featurizer() -> tuple[Featurize, tuple[str, ...]]:
    """ONNX embedder (long prompts as head + tail, ``classifier.long_prompts``) plus the
    text features."""
    from classifier.embedder.runtime import OnnxEmbedder
    from classifier.features import feature_names
    from classifier.long_prompts import PromptEmbedder

    embedder = PromptEmbedder(OnnxEmbedder.load())
    return embedder_featurizer(embedder), feature_names(embedder.dim)


__all__ = [
    "ArmModel",
    "KnnModel",
    "TrainedModel",
    "cell_means",
    "default_featurizer",
    "embedder_featurizer",
    "evaluate_split",
    "fold_prompts",
    "per_arm_metrics",
    "prompt_strata",
    "samples_per_call",
    "split_prompts",
    "tokens_per_sample",
    "train",
]
