"""Routing evaluation of a model against the baselines and the oracle, on one split.

:func:`routing_table` is shared by ``train`` (metrics on its held-out prompts) and
``ttc-router eval`` (:func:`evaluate_model`, a model directory on a test outcome file).
Every learned method is routed with the router's own predicted costs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classifier import baselines
from classifier import metrics as M
from classifier.outcomes_io import OutcomeRecord, read_outcomes, warn_if_prompt_texts_differ
from router.errors import InvalidRequest

F64 = NDArray[np.float64]
F32 = NDArray[np.float32]

FIXED = ("random", "always_cheap", "always_best", "oracle")


def routing_table(
    arms: Sequence[str],
    names: Sequence[str],
    p: F64,
    pred_cost: F64,
    x_train: F32,
    train_recs: Sequence[OutcomeRecord],
    train_pos: Mapping[str, int],
    x_test: F32,
    test_recs: Sequence[OutcomeRecord],
    test_pos: Mapping[str, int],
    *,
    seed: int,
    curves_out: dict[str, M.Curve] | None = None,
) -> dict[str, Any] | None:
    """APGR, cost@95 (and CPT for two arms) of the router and of the baselines fitted on
    the training records, with the oracle, on the full-information test prompts
    (:func:`routing_report`)."""
    preds = {
        "router": p,
        **baseline_predictions(arms, names, x_train, train_recs, train_pos, x_test, seed),
    }
    return routing_report(
        arms, preds, pred_cost, test_recs, test_pos, seed=seed, curves_out=curves_out
    )


def baseline_predictions(
    arms: Sequence[str],
    names: Sequence[str],
    x_train: F32,
    train_recs: Sequence[OutcomeRecord],
    train_pos: Mapping[str, int],
    x_test: F32,
    seed: int,
) -> dict[str, F64]:
    """Every learned baseline's predicted score (rows of ``x_test``, one column per arm),
    fitted on the training records."""
    from classifier.train import cell_means

    ts, _, thave = cell_means(train_recs, train_pos, arms)
    return baselines.predict_all(names, x_train, ts, thave, x_test, seed)


def routing_report(
    arms: Sequence[str],
    preds: Mapping[str, F64],
    pred_cost: F64,
    test_recs: Sequence[OutcomeRecord],
    test_pos: Mapping[str, int],
    *,
    seed: int,
    curves_out: dict[str, M.Curve] | None = None,
    bootstrap: bool = True,
) -> dict[str, Any] | None:
    """APGR, cost@95 (and CPT for two arms) of each method in ``preds`` (``"router"``
    first; rows in ``test_pos`` order), of the fixed policies and of the oracle on the
    full-information test prompts, and under ``versus`` paired-bootstrap intervals of the
    router's lead over each other method (``classifier.uncertainty``; skipped without
    ``bootstrap``); every method is routed with ``pred_cost``. None when there are no such
    prompts or fewer than two arms."""
    from classifier.train import cell_means
    from classifier.uncertainty import paired_bootstrap

    s, c, have = cell_means(test_recs, test_pos, arms)
    full = have.all(axis=1)
    if len(arms) < 2 or not full.any():
        return None
    s, c, cf = s[full], c[full], pred_cost[full]
    a = M.anchors(s, c)
    oracle = M.oracle_choice(s, c)
    picked = np.arange(s.shape[0]), oracle
    fp: dict[str, F64] = {n: pp[full] for n, pp in preds.items()}
    curves: dict[str, M.Curve] = {n: M.sweep(pp, cf, s, c) for n, pp in fp.items()}
    versus = paired_bootstrap(fp, cf, s, c, seed=seed) if bootstrap else {}
    curves["random"] = M.mixing_curve(a)
    curves["always_cheap"] = M.point_curve(a.cost_cheap, a.score_cheap)
    curves["always_best"] = M.point_curve(a.cost_best, a.score_best)
    curves["oracle"] = M.point_curve(float(c[picked].mean()), float(s[picked].mean()))
    methods: dict[str, Any] = {n: M.routing_summary(cv, a) for n, cv in curves.items()}
    for n, pp in fp.items():
        methods[n]["gap_r"] = M.gap_correlation(pp, s)
    if len(arms) == 2 and a.cheap != a.best:
        for n, pp in fp.items():
            shares, scores = M.strong_share_curve(pp, cf, s, a.best)
            methods[n]["cpt50"] = M.cpt(shares, scores, a, 0.5)
            methods[n]["cpt80"] = M.cpt(shares, scores, a, 0.8)
        for target, key in ((0.5, "cpt50"), (0.8, "cpt80")):
            methods["random"][key] = target
            methods["oracle"][key] = M.oracle_cpt(s, a, target)
            methods["always_cheap"][key] = None
            methods["always_best"][key] = 1.0
    if curves_out is not None:
        curves_out.update(curves)
    return {
        "prompts": int(full.sum()),
        "test_prompts": int(full.size),
        **anchor_fields(arms, a),
        "methods": methods,
        "versus": versus,
    }


def anchor_fields(arms: Sequence[str], a: M.Anchors) -> dict[str, Any]:
    """A routing table's cheap and best arm with their mean cost and score."""
    return {
        "cheap_arm": arms[a.cheap],
        "best_arm": arms[a.best],
        "cost_cheap": a.cost_cheap,
        "score_cheap": a.score_cheap,
        "cost_best": a.cost_best,
        "score_best": a.score_best,
    }


def distinct_prompts(records: Sequence[OutcomeRecord]) -> tuple[list[str], list[str]]:
    """(prompt ids, texts) in first-seen order."""
    ids: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    for r in records:
        if r.prompt_id not in seen:
            seen.add(r.prompt_id)
            ids.append(r.prompt_id)
            texts.append(r.prompt)
    return ids, texts


def evaluate_model(
    model_dir: Path,
    test_files: Sequence[Path],
    train_files: Sequence[Path],
    *,
    embedder: Any,
    seed: int = 0,
    curves_out: dict[str, M.Curve] | None = None,
) -> dict[str, Any]:
    """The spec's metrics of the model in ``model_dir`` on ``test_files``; baselines are
    fitted on ``train_files`` (the model's training data)."""
    from classifier.features import feature_names, features_for
    from classifier.predictor import OnnxPredictor
    from classifier.score_scale import scale_from_metadata, to_unit_records
    from classifier.train import per_arm_metrics

    predictor = OnnxPredictor.load(model_dir)
    arms = list(predictor.arms)
    scale = scale_from_metadata(predictor.metadata)
    test_recs = to_unit_records([r for f in test_files for r in read_outcomes(f)], scale)
    train_recs = to_unit_records([r for f in train_files for r in read_outcomes(f)], scale)
    warn_if_prompt_texts_differ(test_recs, ", ".join(map(str, test_files)))
    unknown = sorted({r.arm for r in test_recs} - set(arms))
    if unknown:
        raise InvalidRequest(
            f"{', '.join(map(str, test_files))}: arm(s) {unknown} are not predicted by the model "
            f"(its arms: {arms})"
        )
    missing = [a for a in arms if not any(r.arm == a for r in train_recs)]
    if missing:
        raise InvalidRequest(
            f"{', '.join(map(str, train_files))}: no training records for arm(s) {missing}"
        )
    test_ids, test_texts = distinct_prompts(test_recs)
    train_ids, train_texts = distinct_prompts(train_recs)
    if not test_ids:
        raise InvalidRequest(f"{', '.join(map(str, test_files))}: no outcome records")
    e_test = embedder.embed(test_texts)
    e_train = embedder.embed(train_texts)
    table = predictor.predict_table(e_test, test_texts)
    pos = {pid: i for i, pid in enumerate(test_ids)}
    meta = predictor.metadata
    # a test prompt also in the training files (by id, or by text under another id, as
    # tables with repeated prompts have) is not held out
    seen_ids, seen_texts = set(train_ids), set(train_texts)
    overlap = sum(
        1 for pid, t in zip(test_ids, test_texts, strict=True) if pid in seen_ids or t in seen_texts
    )
    report: dict[str, Any] = {
        "model": predictor.version,
        **({"score_scale": scale.to_json()} if scale else {}),
        **({"test_prompts_in_training": overlap} if overlap else {}),
        "test_files": [str(f) for f in test_files],
        "train_files": [str(f) for f in train_files],
        "test_prompts": len(test_ids),
        "per_arm": per_arm_metrics(
            arms,
            table.p_success,
            np.log(table.tokens),
            dict(meta.get("tokens_hi_log_offset", {})),
            dict(meta.get("tokens_observed", {})),
            test_recs,
            pos,
        ),
    }
    names = feature_names(embedder.dim)
    # A test table may hold some of the model's arms only: route among those (as a service
    # configured with them would), and say so.
    tested = [a for a in arms if any(r.arm == a for r in test_recs)]
    if len(tested) < len(arms):
        report["routed_arms"] = tested
    if len(tested) < 2:
        report["routing_skipped"] = (
            f"routing needs records of at least two of the model's arms; the test file(s) "
            f"have {tested or 'none'}"
        )
        return report
    cols = [arms.index(a) for a in tested]
    routing = routing_table(
        tested,
        names,
        table.p_success[:, cols],
        table.cost_usd[:, cols],
        features_for(e_train, train_texts),
        train_recs,
        {pid: i for i, pid in enumerate(train_ids)},
        features_for(e_test, test_texts),
        test_recs,
        pos,
        seed=seed,
        curves_out=curves_out,
    )
    if routing is not None:
        report["routing"] = routing
    else:
        report["routing_skipped"] = (
            f"no test prompt has a record for every one of the arms {tested}, so routing "
            "cannot be measured (spec/outcomes.md: full-information prompts only)"
        )
    return report


def plot_curves(curves: Mapping[str, M.Curve], title: str, out: Path) -> None:
    """Quality against cost for every method (matplotlib, imported only here)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InvalidRequest(
            "--plot needs matplotlib, which is not installed: pip install matplotlib"
        ) from None
    fig, ax = plt.subplots(figsize=(7, 5))
    for name, cv in curves.items():
        order = np.argsort(cv.costs, kind="stable")
        xs, ys = cv.costs[order], np.maximum.accumulate(cv.scores[order])
        if len(xs) == 1:
            ax.scatter(xs, ys, label=name, zorder=3)
        else:
            ax.step(xs, ys, where="post", label=name, linewidth=2 if name == "router" else 1)
    ax.set_xlabel("mean cost per prompt (USD)")
    ax.set_ylabel("mean score")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


__all__ = [
    "anchor_fields",
    "baseline_predictions",
    "distinct_prompts",
    "evaluate_model",
    "plot_curves",
    "routing_report",
    "routing_table",
]
