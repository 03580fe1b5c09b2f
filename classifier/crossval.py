"""Cross-validated evaluation: every prompt of an outcome table is tested once.

The prompts are dealt into K stratified folds (:func:`classifier.train.fold_prompts`). For
each fold the router is trained on the other K−1 exactly as ``ttc-router train`` trains it
(hyper-parameters chosen by cross-validation inside that part, nothing held out of it),
every learned baseline is fitted on the same part, and all of them predict the held-out
fold.

Each fold is then scored as a test split of its own, with its own model, anchors and oracle
(:func:`classifier.evaluate.routing_report`), and the routing figures are the mean over the
folds: what one trained router achieves on traffic it has not seen, averaged over K such
deployments. (Pooling the folds' predictions into one λ sweep would instead score a mixture
of K models that no deployment runs, in which each model's small offsets shift which
prompts one λ sends where.) The paired intervals resample prompts
within each fold (:func:`classifier.uncertainty.paired_bootstrap_groups`). Calibration and
token figures are computed on the pooled held-out predictions, each made by a model that did
not see its prompt.

Against one 80/20 split this tests five times as many prompts (with K = 5), so the paired
intervals of the router's lead over each baseline are about 2.2 times narrower; the price is
K trainings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classifier import metrics as M
from classifier.outcomes_io import OutcomeRecord
from classifier.train import Progress, TrainedModel
from router.core.types import Price
from router.errors import InvalidRequest

F64 = NDArray[np.float64]
F32 = NDArray[np.float32]

MIN_FOLDS = 2
MAX_FOLDS = 20


@dataclass
class FoldPrediction:
    """A fold model's predictions for its held-out prompts, each (n, A)."""

    p: F64
    log_tokens: F64
    log_tokens_hi: F64
    cost: F64


PredictFold = Callable[[TrainedModel, NDArray[np.int64]], FoldPrediction]


def predict_in_python(x: F32) -> PredictFold:
    """Predict with the fitted scikit-learn parts (equal to the exported ONNX graph within
    the round-trip tolerance); ``x`` holds the feature rows the fold models index."""

    def predict(model: TrainedModel, rows: NDArray[np.int64]) -> FoldPrediction:
        p, log_t, cost = model.predict_all(x[rows])
        off = np.asarray([model.per_arm[a].tokens_hi_log_offset for a in model.arms])
        return FoldPrediction(p, log_t, log_t + off, cost)

    return predict


def cross_validate(
    records: Sequence[OutcomeRecord],
    x: F32,
    index: Mapping[str, int],
    *,
    folds: int,
    seed: int,
    feature_names: Sequence[str],
    arms: Sequence[str] | None = None,
    prices: Mapping[str, Price] | None = None,
    predict: PredictFold | None = None,
    progress: Progress | None = None,
    curves_out: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The K-fold report: per-arm calibration and tokens on the pooled held-out
    predictions, and the routing table of the router, the baselines and the oracle as the
    mean over folds (with each fold's router figures under ``fold_models``).

    ``x`` holds one feature row per prompt, ``index`` maps each prompt id to its row;
    ``predict`` turns a fold model and the rows of its held-out prompts into predictions
    (default :func:`predict_in_python`); ``curves_out`` receives every method's
    quality-against-cost curve, averaged over the folds.
    """
    from classifier.evaluate import baseline_predictions, routing_report
    from classifier.train import cell_means, fold_prompts, per_arm_metrics, prompt_strata, train

    if not MIN_FOLDS <= folds <= MAX_FOLDS:
        raise InvalidRequest(f"--folds must be between {MIN_FOLDS} and {MAX_FOLDS}, got {folds}")
    if not records:
        raise InvalidRequest("no outcome records to cross-validate")
    arm_list = list(arms) if arms else sorted({r.arm for r in records})
    wanted = set(arm_list)
    used = [r for r in records if r.arm in wanted]
    fold_of = fold_prompts([r.prompt_id for r in used], seed, folds, prompt_strata(used))
    if len(fold_of) < 2 * folds:
        raise InvalidRequest(
            f"{len(fold_of)} prompts are too few for {folds} folds: give at least "
            f"{2 * folds} prompts or fewer --folds"
        )
    report: Progress = progress or (lambda what, fraction: None)
    run = predict or predict_in_python(x)
    ids = sorted(fold_of)
    pos = {pid: i for i, pid in enumerate(ids)}
    n, a_n = len(ids), len(arm_list)
    preds: dict[str, F64] = {"router": np.zeros((n, a_n))}
    log_t, log_hi, cost = np.zeros((n, a_n)), np.zeros((n, a_n)), np.zeros((n, a_n))
    texts: dict[str, int] = {}
    for r in used:
        texts.setdefault(r.prompt, index[r.prompt_id])

    def featurize(batch: Sequence[str]) -> F32:
        return x[[texts[t] for t in batch]]

    fold_info: list[dict[str, Any]] = []
    for f in range(folds):
        train_recs = [r for r in used if fold_of[r.prompt_id] != f]
        test_ids = [pid for pid in ids if fold_of[pid] == f]
        at = f / folds

        def part(what: str, frac: float, at: float = at, f: int = f) -> None:
            report(f"fold {f + 1}/{folds}: {what}", at + frac / folds)

        try:
            model = train(
                train_recs,
                seed=seed,
                arms=arm_list,
                featurize=featurize,
                feature_names=feature_names,
                prices=prices,
                test_fraction=0.0,
                progress=part,
            )
        except InvalidRequest as exc:
            raise InvalidRequest(
                f"training on all but fold {f + 1} of {folds}: {exc.message}"
            ) from None
        rows = np.asarray([pos[pid] for pid in test_ids], np.int64)
        feat_rows = np.asarray([index[pid] for pid in test_ids], np.int64)
        got = run(model, feat_rows)
        preds["router"][rows] = got.p
        log_t[rows], log_hi[rows], cost[rows] = got.log_tokens, got.log_tokens_hi, got.cost
        train_ids = sorted({r.prompt_id for r in train_recs})
        fitted = baseline_predictions(
            arm_list,
            feature_names,
            x[[index[pid] for pid in train_ids]],
            train_recs,
            {pid: i for i, pid in enumerate(train_ids)},
            x[feat_rows],
            seed,
        )
        for name, pb in fitted.items():
            preds.setdefault(name, np.zeros((n, a_n)))[rows] = pb
        fold_info.append(
            {
                "fold": f,
                "train_prompts": len(train_ids),
                "test_prompts": len(test_ids),
                "stack": model.stack.kind,
                "gap_weight": model.stack.gap.weight,
                "cells_weight": model.cells_weight,
                "knn_k": model.knn.k,
            }
        )
    observed = {a: any(r.arm == a and r.output_tokens is not None for r in used) for a in arm_list}
    out: dict[str, Any] = {
        "model": f"router, {folds}-fold cross-validation (seed {seed})",
        "evaluation": "cross-validation",
        "folds": folds,
        "seed": seed,
        "test_prompts": n,
        "fold_models": fold_info,
        "per_arm": per_arm_metrics(
            arm_list,
            preds["router"],
            log_t,
            {a: log_hi[:, j] - log_t[:, j] for j, a in enumerate(arm_list)},
            observed,
            used,
            pos,
        ),
    }
    fold_idx = np.asarray([fold_of[pid] for pid in ids])
    parts: list[_FoldRouting] = []
    for f in range(folds):
        sel = np.flatnonzero(fold_idx == f)
        f_pos = {ids[i]: k for k, i in enumerate(sel)}
        f_recs = [r for r in used if fold_of[r.prompt_id] == f]
        f_preds = {name: v[sel] for name, v in preds.items()}
        curves: dict[str, M.Curve] = {}
        rep = routing_report(
            arm_list,
            f_preds,
            cost[sel],
            f_recs,
            f_pos,
            seed=seed,
            curves_out=curves,
            bootstrap=False,
        )
        if rep is None:
            continue
        s, c, have = cell_means(f_recs, f_pos, arm_list)
        full = have.all(axis=1)
        bootstrap_in = ({k: v[full] for k, v in f_preds.items()}, cost[sel][full], s[full], c[full])
        parts.append(_FoldRouting(rep, curves, bootstrap_in))
        fold_info[f]["routing"] = {
            key: rep[key] for key in ("prompts", "cheap_arm", "best_arm")
        } | {key: rep["methods"]["router"][key] for key in ("apgr", "cost_at_95")}
    if parts:
        out["routing"] = _mean_of_folds(arm_list, parts, used, pos, seed)
        if curves_out is not None:
            curves_out.update(_mean_curves([p.curves for p in parts]))
    report("done", 1.0)
    return out


@dataclass
class _FoldRouting:
    report: dict[str, Any]
    curves: dict[str, M.Curve]
    bootstrap_in: tuple[dict[str, F64], F64, F64, F64]


_UNREACHED_AS_ONE = ("cost_at_95", "cpt50", "cpt80")
_FIGURES = ("apgr", "cost_at_95", "max_score", "gap_r", "cpt50", "cpt80")


def _mean_figure(key: str, values: Sequence[float | None]) -> float | None:
    """The mean over folds: "unreached" cost@95 and CPT count as 1.0 (no saving, every call
    to the strong arm), as the paired bootstrap counts them; None only if no fold has one."""
    if all(v is None for v in values):
        return None
    if key in _UNREACHED_AS_ONE:
        return float(np.mean([1.0 if v is None else v for v in values]))
    got = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(got)) if got else float("nan")


def _mean_of_folds(
    arms: Sequence[str],
    parts: Sequence[_FoldRouting],
    records: Sequence[OutcomeRecord],
    pos: Mapping[str, int],
    seed: int,
) -> dict[str, Any]:
    """The folds' routing tables as one: every figure the mean over folds, each fold scored
    with its own model, anchors and oracle; the paired intervals resample within folds."""
    from classifier.evaluate import anchor_fields
    from classifier.train import cell_means
    from classifier.uncertainty import paired_bootstrap_groups

    methods: dict[str, Any] = {}
    for name in parts[0].report["methods"]:
        rows = [p.report["methods"][name] for p in parts]
        methods[name] = {
            key: _mean_figure(key, [r[key] for r in rows]) for key in _FIGURES if key in rows[0]
        }
    s, c, have = cell_means(records, pos, arms)
    full = have.all(axis=1)
    a = M.anchors(s[full], c[full])
    return {
        "prompts": sum(p.report["prompts"] for p in parts),
        "test_prompts": sum(p.report["test_prompts"] for p in parts),
        **anchor_fields(arms, a),
        "aggregate": f"mean over {len(parts)} folds, each scored with its own model",
        "methods": methods,
        "versus": paired_bootstrap_groups([p.bootstrap_in for p in parts], seed=seed),
    }


def _mean_curves(per_fold: Sequence[Mapping[str, M.Curve]], n: int = 200) -> dict[str, M.Curve]:
    """Per method, the folds' quality-against-cost curves averaged on a common cost grid
    (the best score reachable at each mean cost, as APGR reads a curve); a method that is
    one point per fold stays one point, the mean of the folds'."""
    out: dict[str, M.Curve] = {}
    for name in per_fold[0]:
        curves = [f[name] for f in per_fold]
        if all(cv.costs.size == 1 for cv in curves):
            out[name] = M.point_curve(
                float(np.mean([cv.costs[0] for cv in curves])),
                float(np.mean([cv.scores[0] for cv in curves])),
            )
            continue
        lo = max(float(cv.costs.min()) for cv in curves)
        hi = max(float(cv.costs.max()) for cv in curves)
        grid = np.linspace(lo, hi, n)
        q = [[M.quality_at(cv, float(x), float("nan")) for x in grid] for cv in curves]
        out[name] = M.Curve(grid, np.mean(np.asarray(q), axis=0))
    return out


__all__ = ["FoldPrediction", "cross_validate", "predict_in_python"]
