"""Train the per-arm success and output-token models from outcome records.

Per arm, on standardised features (one shared ``StandardScaler``):

* ``p_success``: ``LogisticRegression`` with C chosen by 5-fold cross-validation (folds
  by prompt, weighted log loss). A graded score s in [0, 1] becomes two weighted rows,
  (label 1, weight s) and (label 0, weight 1 - s), so the model estimates the expected
  score; logged records with a ``propensity`` are weighted by 1 / propensity (floored at
  0.01) on top.
* output tokens per sample (``output_tokens`` / k for ``vote@k``/``best@k``): ``Ridge``
  on log tokens, alpha chosen by the same folds; the high estimate adds the 90th
  percentile of out-of-fold residuals (``tokens_hi_log_offset``).

A seeded split by prompt holds a test share apart; the returned model is fitted on the
rest, and its metrics (``classifier.metrics``) are computed on the held-out prompts.
Everything is deterministic for a given seed.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classifier import metrics as M
from classifier.outcomes_io import OutcomeRecord
from router.core.types import Arm, Price
from router.errors import InvalidRequest

Featurize = Callable[[Sequence[str]], NDArray[np.float32]]

C_GRID: tuple[float, ...] = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3)
ALPHA_GRID: tuple[float, ...] = (1.0, 10.0, 100.0, 1000.0, 10000.0)
N_FOLDS = 5
TOKENS_HI_QUANTILE = 0.9
MIN_PROPENSITY = 0.01
_K_RE = re.compile(r"^(?:vote|best)@(\d+)$")


def samples_per_call(arm: str) -> int:
    """k for ``vote@k``/``best@k`` arms, else 1."""
    m = _K_RE.match(Arm.parse(arm).strategy)
    return int(m.group(1)) if m else 1


@dataclass
class ArmModel:
    """The fitted models of one arm (both act on standardised features)."""

    arm: str
    classifier: Any
    regressor: Any
    c: float
    alpha: float
    tokens_hi_log_offset: float
    samples: int


@dataclass
class TrainedModel:
    """What :func:`train` returns; exported by ``classifier.onnx_export``."""

    arms: list[str]
    feature_names: tuple[str, ...]
    scaler: Any
    per_arm: dict[str, ArmModel]
    seed: int
    test_fraction: float = 0.2
    metrics: dict[str, Any] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    prices: dict[str, dict[str, float]] = field(default_factory=dict)

    def predict_arrays(
        self, x: NDArray[np.float32]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(p_success, log tokens per sample), each (N, A), computed with scikit-learn."""
        z = self.scaler.transform(np.asarray(x, dtype=np.float32))
        p = np.column_stack([self.per_arm[a].classifier.predict_proba(z)[:, 1] for a in self.arms])
        t = np.column_stack([self.per_arm[a].regressor.predict(z) for a in self.arms])
        return p.astype(np.float64), t.astype(np.float64)


@dataclass
class _PromptTable:
    ids: list[str]
    texts: list[str]
    index: dict[str, int]


def _prompts(records: Sequence[OutcomeRecord]) -> _PromptTable:
    ids: list[str] = []
    texts: list[str] = []
    index: dict[str, int] = {}
    for r in records:
        if r.prompt_id not in index:
            index[r.prompt_id] = len(ids)
            ids.append(r.prompt_id)
            texts.append(r.prompt)
    return _PromptTable(ids, texts, index)


def split_prompts(prompt_ids: Sequence[str], seed: int, test_fraction: float) -> set[str]:
    """The held-out prompt ids: a seeded permutation of the sorted ids."""
    ordered = sorted(set(prompt_ids))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(ordered))
    n_test = math.ceil(test_fraction * len(ordered)) if test_fraction > 0 else 0
    return {ordered[i] for i in perm[:n_test]}


def _folds(prompt_ids: Sequence[str], seed: int) -> NDArray[np.int64]:
    """Cross-validation fold of each prompt (in the given order), independent of that order."""
    ordered = sorted(prompt_ids)
    fold = np.random.default_rng(seed + 1).permutation(len(ordered)) % N_FOLDS
    of_id = dict(zip(ordered, fold.tolist(), strict=True))
    return np.asarray([of_id[i] for i in prompt_ids], dtype=np.int64)


def _weight(r: OutcomeRecord) -> float:
    return 1.0 if r.propensity is None else 1.0 / max(r.propensity, MIN_PROPENSITY)


def _classification_rows(
    recs: Sequence[OutcomeRecord], index: Mapping[str, int]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
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
    return np.asarray(rows, np.int64), np.asarray(labels, np.int64), np.asarray(weights, np.float64)


def _log_loss(p: NDArray[np.float64], y: NDArray[np.int64], w: NDArray[np.float64]) -> float:
    q = np.clip(p, 1e-12, 1 - 1e-12)
    ll = -(y * np.log(q) + (1 - y) * np.log(1 - q))
    return float(np.sum(w * ll) / np.sum(w))


def _fit_classifier(
    z: NDArray[np.float64],
    rows: NDArray[np.int64],
    y: NDArray[np.int64],
    w: NDArray[np.float64],
    folds: NDArray[np.int64],
    arm: str,
) -> tuple[Any, float]:
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        raise InvalidRequest(f"arm {arm!r}: training data has only successes or only failures")

    def make(c: float) -> Any:
        return LogisticRegression(C=c, max_iter=5000, tol=1e-6)

    fold_of = folds[rows]
    best_c, best_loss = C_GRID[0], math.inf
    for c in C_GRID:
        losses, sizes = [], []
        for k in range(N_FOLDS):
            tr, te = fold_of != k, fold_of == k
            if not te.any() or len(np.unique(y[tr])) < 2:
                continue
            clf = make(c).fit(z[rows[tr]], y[tr], sample_weight=w[tr])
            losses.append(_log_loss(clf.predict_proba(z[rows[te]])[:, 1], y[te], w[te]))
            sizes.append(float(w[te].sum()))
        loss = float(np.average(losses, weights=sizes)) if losses else math.inf
        if loss < best_loss - 1e-12:
            best_c, best_loss = c, loss
    return make(best_c).fit(z[rows], y, sample_weight=w), best_c


def _fit_regressor(
    z: NDArray[np.float64],
    rows: NDArray[np.int64],
    t: NDArray[np.float64],
    w: NDArray[np.float64],
    folds: NDArray[np.int64],
) -> tuple[Any, float, float]:
    from sklearn.linear_model import Ridge

    fold_of = folds[rows]
    best_alpha, best_mse = ALPHA_GRID[0], math.inf
    best_oof = np.zeros_like(t)
    for alpha in ALPHA_GRID:
        oof = np.full_like(t, np.nan)
        for k in range(N_FOLDS):
            tr, te = fold_of != k, fold_of == k
            if not te.any() or not tr.any():
                continue
            reg = Ridge(alpha=alpha).fit(z[rows[tr]], t[tr], sample_weight=w[tr])
            oof[te] = reg.predict(z[rows[te]])
        ok = ~np.isnan(oof)
        mse = float(np.average((oof[ok] - t[ok]) ** 2, weights=w[ok])) if ok.any() else math.inf
        if mse < best_mse - 1e-12:
            best_alpha, best_mse, best_oof = alpha, mse, oof
    reg = Ridge(alpha=best_alpha).fit(z[rows], t, sample_weight=w)
    resid = (t - best_oof)[~np.isnan(best_oof)]
    offset = float(np.quantile(resid, TOKENS_HI_QUANTILE)) if resid.size else 0.0
    return reg, best_alpha, max(offset, 0.0)


def _token_rows(
    recs: Sequence[OutcomeRecord], index: Mapping[str, int], k: int, arm: str
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64]]:
    with_tokens = [r for r in recs if r.output_tokens is not None]
    if not with_tokens:
        raise InvalidRequest(f"arm {arm!r}: no training record carries output_tokens")
    rows = np.asarray([index[r.prompt_id] for r in with_tokens], np.int64)
    t = np.log(np.maximum([(r.output_tokens or 0) / k for r in with_tokens], 1.0))
    w = np.asarray([_weight(r) for r in with_tokens], np.float64)
    return rows, np.asarray(t, np.float64), w


def train(
    records: Sequence[OutcomeRecord],
    *,
    seed: int,
    arms: list[str] | None = None,
    featurize: Featurize | None = None,
    feature_names: Sequence[str] | None = None,
    prices: Mapping[str, Price] | None = None,
    test_fraction: float = 0.2,
) -> TrainedModel:
    """Fit per-arm models on a seeded train split and evaluate them on the held-out prompts.

    ``featurize`` maps prompt texts to predictor input rows (default: the ONNX embedder
    plus ``classifier.features``); ``prices`` (per tier) turn predicted tokens into the
    predicted costs the routing metrics sweep over; arms without a price use their mean
    training cost instead.
    """
    from sklearn.preprocessing import StandardScaler

    if not records:
        raise InvalidRequest("no outcome records to train on")
    arm_list = list(arms) if arms is not None else sorted({r.arm for r in records})
    for a in arm_list:
        Arm.parse(a)
    missing = [a for a in arm_list if not any(r.arm == a for r in records)]
    if missing:
        raise InvalidRequest(f"no outcome records for arm(s) {missing}")
    if not 0.0 <= test_fraction < 1.0:
        raise InvalidRequest("test_fraction must be in [0, 1)")
    used = [r for r in records if r.arm in set(arm_list)]
    table = _prompts(used)

    if featurize is None:
        featurize, default_names = default_featurizer()
        feature_names = feature_names or default_names
    x = np.asarray(featurize(table.texts), dtype=np.float32)
    if x.ndim != 2 or x.shape[0] != len(table.ids):
        raise InvalidRequest(f"featurize returned shape {x.shape} for {len(table.ids)} prompts")
    names = tuple(feature_names) if feature_names else tuple(f"f{i}" for i in range(x.shape[1]))
    if len(names) != x.shape[1]:
        raise InvalidRequest(f"{len(names)} feature names for {x.shape[1]} feature columns")

    test_ids = split_prompts(table.ids, seed, test_fraction)
    train_recs = [r for r in used if r.prompt_id not in test_ids]
    test_recs = [r for r in used if r.prompt_id in test_ids]
    train_rows = sorted({table.index[r.prompt_id] for r in train_recs})
    scaler = StandardScaler().fit(x[train_rows])
    z = scaler.transform(x).astype(np.float64)
    folds = _folds(table.ids, seed)

    by_arm: dict[str, list[OutcomeRecord]] = defaultdict(list)
    for r in train_recs:
        by_arm[r.arm].append(r)
    per_arm: dict[str, ArmModel] = {}
    for a in arm_list:
        if not by_arm[a]:
            raise InvalidRequest(f"arm {a!r} has no records outside the held-out split")
        rows, y, w = _classification_rows(by_arm[a], table.index)
        clf, c = _fit_classifier(z, rows, y, w, folds, a)
        k = samples_per_call(a)
        trows, t, tw = _token_rows(by_arm[a], table.index, k, a)
        reg, alpha, offset = _fit_regressor(z, trows, t, tw, folds)
        per_arm[a] = ArmModel(a, clf, reg, c, alpha, offset, k)

    model = TrainedModel(
        arms=arm_list,
        feature_names=names,
        scaler=scaler,
        per_arm=per_arm,
        seed=seed,
        test_fraction=test_fraction,
        counts={
            "records": len(used),
            "prompts": len(table.ids),
            "train_prompts": len(table.ids) - len(test_ids),
            "test_prompts": len(test_ids),
            "records_per_arm": {a: sum(1 for r in used if r.arm == a) for a in arm_list},
        },
    )
    cost_model = _CostModel(arm_list, train_recs, prices or {})
    model.prices = cost_model.prices_used()
    if test_recs:
        model.metrics = _evaluate(model, x, table.index, train_recs, test_recs, cost_model)
    return model


class _CostModel:
    """Predicted USD cost of an arm for a prompt from predicted tokens and prices."""

    def __init__(
        self, arms: Sequence[str], train_recs: Sequence[OutcomeRecord], prices: Mapping[str, Price]
    ) -> None:
        self.arms = list(arms)
        self.price = {a: prices.get(Arm.parse(a).tier) for a in self.arms}
        costs: dict[str, list[float]] = defaultdict(list)
        for r in train_recs:
            costs[r.arm].append(r.cost_usd)
        self.mean_cost = {a: float(np.mean(costs[a])) if costs[a] else 0.0 for a in self.arms}

    def prices_used(self) -> dict[str, dict[str, float]]:
        return {
            a: {"input_per_mtok": p.input_per_mtok, "output_per_mtok": p.output_per_mtok}
            for a, p in self.price.items()
            if p is not None
        }

    def predict(
        self, input_tokens: NDArray[np.float64], log_tokens: NDArray[np.float64]
    ) -> NDArray[np.float64]:
        """(N, A) cost from input tokens per sample and log output tokens per sample."""
        out = np.zeros_like(log_tokens)
        for j, a in enumerate(self.arms):
            p = self.price[a]
            if p is None:
                out[:, j] = self.mean_cost[a]
                continue
            k = samples_per_call(a)
            tokens_in = k * input_tokens[:, j]
            tokens_out = k * np.exp(log_tokens[:, j])
            out[:, j] = (tokens_in * p.input_per_mtok + tokens_out * p.output_per_mtok) / 1e6
        return out


def _cell_means(
    recs: Sequence[OutcomeRecord], pos: Mapping[str, int], arms: Sequence[str]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_]]:
    """Mean score, cost and input tokens per sample per (prompt, arm), and which cells exist."""
    n, a = len(pos), len(arms)
    col = {arm: j for j, arm in enumerate(arms)}
    s, c, t, k = (np.zeros((n, a)) for _ in range(4))
    for r in recs:
        i, j = pos[r.prompt_id], col[r.arm]
        s[i, j] += r.score
        c[i, j] += r.cost_usd
        t[i, j] += (r.input_tokens or 0) / samples_per_call(r.arm)
        k[i, j] += 1
    have = k > 0
    k[~have] = 1
    return s / k, c / k, t / k, have


def _baselines(
    model: TrainedModel,
    x: NDArray[np.float32],
    index: Mapping[str, int],
    train_recs: Sequence[OutcomeRecord],
    test_rows: NDArray[np.int64],
) -> dict[str, NDArray[np.float64]]:
    """p_success of kNN (k=20) and per-arm logistic regression on embeddings only."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.preprocessing import StandardScaler

    emb_cols = [i for i, name in enumerate(model.feature_names) if name.startswith("emb_")]
    if not emb_cols:
        return {}
    emb = x[:, emb_cols].astype(np.float64)
    knn_p, lr_p = [], []
    for a in model.arms:
        recs = [r for r in train_recs if r.arm == a]
        sums: dict[int, list[float]] = defaultdict(list)
        for r in recs:
            sums[index[r.prompt_id]].append(r.score)
        rows = np.asarray(sorted(sums), np.int64)
        target = np.asarray([np.mean(sums[i]) for i in rows])
        knn = KNeighborsRegressor(n_neighbors=min(20, len(rows))).fit(emb[rows], target)
        knn_p.append(knn.predict(emb[test_rows]))
        scaler = StandardScaler().fit(emb[rows])
        crow, y, w = _classification_rows(recs, index)
        if len(np.unique(y)) < 2:
            lr_p.append(np.full(len(test_rows), float(y[0])))
            continue
        lr = LogisticRegression(C=1.0, max_iter=5000).fit(
            scaler.transform(emb[crow]), y, sample_weight=w
        )
        lr_p.append(lr.predict_proba(scaler.transform(emb[test_rows]))[:, 1])
    return {"knn20_embedding": np.column_stack(knn_p), "logreg_embedding": np.column_stack(lr_p)}


def _evaluate(
    model: TrainedModel,
    x: NDArray[np.float32],
    index: Mapping[str, int],
    train_recs: Sequence[OutcomeRecord],
    test_recs: Sequence[OutcomeRecord],
    cost_model: _CostModel,
) -> dict[str, Any]:
    """Held-out metrics: per-arm calibration and token accuracy, then routing quality."""
    arms = model.arms
    test_ids = sorted({r.prompt_id for r in test_recs})
    pos = {pid: i for i, pid in enumerate(test_ids)}
    rows = np.asarray([index[pid] for pid in test_ids], np.int64)
    p, log_t = model.predict_arrays(x[rows])

    per_arm: dict[str, Any] = {}
    for j, a in enumerate(arms):
        recs = [r for r in test_recs if r.arm == a]
        pa = np.asarray([p[pos[r.prompt_id], j] for r in recs])
        ya = np.asarray([r.score for r in recs])
        k = samples_per_call(a)
        tok = [(pos[r.prompt_id], r.output_tokens / k) for r in recs if r.output_tokens is not None]
        entry: dict[str, Any] = {
            "n": len(recs),
            "mean_score": float(ya.mean()),
            "mean_p": float(pa.mean()),
            "brier": M.brier(pa, ya),
            "ece": M.ece(pa, ya, 10),
            "c": model.per_arm[a].c,
        }
        if tok:
            ti = np.asarray([i for i, _ in tok], np.int64)
            actual = np.asarray([v for _, v in tok])
            pred = np.exp(log_t[ti, j])
            hi = np.exp(log_t[ti, j] + model.per_arm[a].tokens_hi_log_offset)
            entry["tokens_within_2x"] = M.within_factor(pred, actual, 2.0)
            entry["tokens_hi_coverage"] = M.share_at_or_below(hi, actual)
            entry["median_tokens_actual"] = float(np.median(actual))
            entry["median_tokens_pred"] = float(np.median(pred))
        per_arm[a] = entry

    out: dict[str, Any] = {"split": "held-out prompts", "per_arm": per_arm}
    s, c, inp, have = _cell_means(test_recs, pos, arms)
    full = have.all(axis=1)
    if len(arms) < 2 or not full.any():
        return out
    s, c, inp, pf, lt = s[full], c[full], inp[full], p[full], log_t[full]
    pred_cost = cost_model.predict(inp, lt)
    anchors = M.anchors(s, c)
    oracle = M.oracle_choice(s, c)
    picked = np.arange(s.shape[0]), oracle
    curves: dict[str, M.Curve] = {
        "router": M.sweep(pf, pred_cost, s, c),
        "random": M.mixing_curve(anchors),
        "always_cheap": M.point_curve(anchors.cost_cheap, anchors.score_cheap),
        "always_best": M.point_curve(anchors.cost_best, anchors.score_best),
        "oracle": M.point_curve(float(c[picked].mean()), float(s[picked].mean())),
    }
    for name, pb in _baselines(model, x, index, train_recs, rows[full]).items():
        curves[name] = M.sweep(pb, pred_cost, s, c)
    out["routing"] = {
        "prompts": int(full.sum()),
        "cheap_arm": arms[anchors.cheap],
        "best_arm": arms[anchors.best],
        "cost_cheap": anchors.cost_cheap,
        "score_cheap": anchors.score_cheap,
        "cost_best": anchors.cost_best,
        "score_best": anchors.score_best,
        "methods": {name: M.routing_summary(cv, anchors) for name, cv in curves.items()},
    }
    return out


def embedder_featurizer(embedder: Any, batch: int = 32) -> Featurize:
    """Featurize with an embedder (``embed_batch``/``dim``) plus the text features; texts
    are embedded in length-sorted batches to keep padding small."""
    from classifier.features import features_for

    def featurize(texts: Sequence[str]) -> NDArray[np.float32]:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        emb = np.zeros((len(texts), embedder.dim), dtype=np.float32)
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            emb[idx] = embedder.embed_batch([texts[i] for i in idx])
        return features_for(emb, texts)

    return featurize


def default_featurizer() -> tuple[Featurize, tuple[str, ...]]:
    """The service's featurizer: ONNX embedder output plus the text features."""
    from classifier.embedder.runtime import OnnxEmbedder
    from classifier.features import feature_names

    embedder = OnnxEmbedder.load()
    return embedder_featurizer(embedder), feature_names(embedder.dim)


__all__ = [
    "ArmModel",
    "TrainedModel",
    "default_featurizer",
    "embedder_featurizer",
    "samples_per_call",
    "split_prompts",
    "train",
]
