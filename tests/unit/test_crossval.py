"""K-fold cross-validated evaluation: the folds, and the pooling of the fold models'
held-out predictions into one report (synthetic features, scikit-learn path)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from numpy.typing import NDArray

from classifier import metrics as M
from classifier.crossval import FoldPrediction, cross_validate, predict_in_python
from classifier.outcomes_io import OutcomeRecord
from classifier.train import TrainedModel, cell_means, fold_prompts, prompt_strata, train
from classifier.uncertainty import paired_bootstrap, paired_bootstrap_groups
from router.errors import InvalidRequest
from tests.unit.test_train_roundtrip import ARMS, N_FEATURES, N_PROMPTS, _featurizer, _synthetic

FOLDS = 3
SEED = 1


def _inputs() -> tuple[list[OutcomeRecord], NDArray[np.float32], dict[str, int]]:
    records, by_text = _synthetic()
    ids = sorted({r.prompt_id for r in records})
    text_of = {r.prompt_id: r.prompt for r in records}
    x = np.stack([by_text[text_of[pid]] for pid in ids])
    return records, x, {pid: i for i, pid in enumerate(ids)}


def test_folds_partition_the_prompts_and_keep_each_stratum_balanced() -> None:
    records, _, _ = _inputs()
    strata = prompt_strata(records)
    ids = [r.prompt_id for r in records]
    folds = fold_prompts(ids, 4, 5, strata)
    assert set(folds) == set(ids) and set(folds.values()) == set(range(5))
    sizes = Counter(folds.values())
    assert max(sizes.values()) - min(sizes.values()) <= 1
    for stratum in set(strata.values()):
        per_fold = Counter(folds[p] for p, s in strata.items() if s == stratum)
        counts = [per_fold.get(f, 0) for f in range(5)]
        assert max(counts) - min(counts) <= 1, stratum
    assert folds == fold_prompts(list(reversed(ids)), 4, 5, strata)
    assert folds != fold_prompts(ids, 5, 5, strata)


def test_report_pools_every_fold_models_held_out_predictions() -> None:
    records, x, index = _inputs()
    names = [f"f{i}" for i in range(N_FEATURES)]
    seen: list[tuple[TrainedModel, NDArray[np.int64]]] = []
    inner = predict_in_python(x)

    def spy(model: TrainedModel, rows: NDArray[np.int64]) -> FoldPrediction:
        seen.append((model, rows))
        return inner(model, rows)

    report = cross_validate(
        records, x, index, folds=FOLDS, seed=SEED, feature_names=names, predict=spy
    )
    assert report["test_prompts"] == N_PROMPTS and len(seen) == FOLDS
    assert sorted(np.concatenate([rows for _, rows in seen]).tolist()) == list(range(N_PROMPTS))
    for info in report["fold_models"]:
        assert info["train_prompts"] + info["test_prompts"] == N_PROMPTS
    assert {a: e["n"] for a, e in report["per_arm"].items()} == dict.fromkeys(ARMS, N_PROMPTS)

    # The same folds by hand: train on the other folds, score the held-out one with that
    # model, average the folds' figures.
    fold_of = fold_prompts([r.prompt_id for r in records], SEED, FOLDS, prompt_strata(records))
    arms = sorted(ARMS)
    _, by_text = _synthetic()
    figures, pooled_p = [], []
    for f in range(FOLDS):
        part = [r for r in records if fold_of[r.prompt_id] != f]
        model = train(part, seed=SEED, arms=arms, featurize=_featurizer(by_text), test_fraction=0.0)
        held = sorted(pid for pid in fold_of if fold_of[pid] == f)
        p, _, cost = model.predict_all(x[[index[pid] for pid in held]])
        held_recs = [r for r in records if fold_of[r.prompt_id] == f]
        s, c, _ = cell_means(held_recs, {pid: i for i, pid in enumerate(held)}, arms)
        summary = M.routing_summary(M.sweep(p, cost, s, c), M.anchors(s, c))
        figures.append((summary["apgr"], summary["cost_at_95"] or 1.0))
        pooled_p.append(p)
        assert report["fold_models"][f]["routing"]["apgr"] == pytest.approx(summary["apgr"])
    got = report["routing"]["methods"]["router"]
    assert got["apgr"] == pytest.approx(np.mean([a for a, _ in figures]), abs=1e-12)
    assert got["cost_at_95"] == pytest.approx(np.mean([c for _, c in figures]), abs=1e-12)
    mean_p = [report["per_arm"][a]["mean_p"] for a in arms]
    assert mean_p == pytest.approx(np.concatenate(pooled_p).mean(axis=0).tolist())
    assert set(report["routing"]["versus"]) == {"knn20", "logreg", "mf", "mlp", "task_complexity"}
    assert report["routing"]["prompts"] == N_PROMPTS


def test_grouped_bootstrap_of_one_group_is_the_plain_bootstrap() -> None:
    rng = np.random.default_rng(0)
    s = (rng.random((60, 2)) < [0.4, 0.8]).astype(float)
    c = np.tile([1.0, 5.0], (60, 1))
    preds = {"router": s * 0.6 + 0.2, "other": rng.random((60, 2))}
    plain = paired_bootstrap(preds, c, s, c, seed=3, draws=50)
    assert paired_bootstrap_groups([(preds, c, s, c)], seed=3, draws=50) == plain
    two = paired_bootstrap_groups([(preds, c, s, c), (preds, c, s, c)], seed=3, draws=50)
    assert two["other"]["apgr"]["observed"] == pytest.approx(plain["other"]["apgr"]["observed"])
    assert two["other"]["apgr"]["hi"] - two["other"]["apgr"]["lo"] < (
        plain["other"]["apgr"]["hi"] - plain["other"]["apgr"]["lo"]
    )


def test_bad_fold_counts_and_too_few_prompts_are_refused() -> None:
    records, x, index = _inputs()
    names = [f"f{i}" for i in range(N_FEATURES)]
    for folds in (1, 21):
        with pytest.raises(InvalidRequest, match="--folds must be between 2 and 20"):
            cross_validate(records, x, index, folds=folds, seed=0, feature_names=names)
    few = [r for r in records if int(r.prompt_id[1:]) < 7]
    with pytest.raises(InvalidRequest, match="7 prompts are too few for 4 folds"):
        cross_validate(few, x, index, folds=4, seed=0, feature_names=names)
    # An arm seen on one prompt only is missing from every training part but one.
    lonely = [r for r in records if r.arm != ARMS[2] or r.prompt_id == "p0"]
    with pytest.raises(
        InvalidRequest, match=r"training on all but fold \d of 3: (too few outcomes|.*cheap/vote@3)"
    ):
        cross_validate(lonely, x, index, folds=3, seed=0, feature_names=names)
