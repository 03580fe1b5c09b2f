"""The router against every baseline over several seeded splits of the public data sets.

Run: ``python benchmarks/seeds.py [--sets zeroeval3,zeroeval2,gsm8k-openai,llmrouter,
llmrouter2,alpaca-eval] [--outcomes FILE.jsonl ...] [--seeds 0,1,2,3,4] [--folds K]
[--json results.json]``.
``--outcomes`` adds outcome files of your own (for example the output of
``ttc-router simulate``), each a set named by its file name; ``--sets ""`` runs only those.

For each set and seed: the stratified 80/20 split of ``ttc-router data split --seed S``,
``train --seed S`` on the 80%, and the held-out report of ``train``/``eval`` on the 20%
(baselines seeded with S); with ``--folds K``, instead, the K-fold cross-validation of
``ttc-router eval --folds K --seed S`` (every prompt tested once, ``classifier.crossval``,
predicted with the scikit-learn parts rather than through ONNX Runtime). One line per
split: the router's APGR and cost@95 beside the best baseline's, the worst arm's ECE beside
the 95th percentile a calibrated model would show on that split, and how many baselines the
paired bootstrap puts significantly ahead of or behind the router (90% interval of the
difference clear of zero). Then the mean of every method over the seeds, with the learned
methods' gap correlation (``gap r``: how well the predicted score gaps between arms follow
the actual ones).

``llmrouter2`` is LLMRouter's cheapest model against its best one
(gemma-2-9b-it and llama-3.1-nemotron-51b-instruct), the metric's own cheap and best arms
of the 9-model set. ``alpaca-eval`` is AlpacaEval's graded judge preferences for three
FuseChat models (1B, 3B, 9B; ``ttc-router data import alpaca-eval``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from classifier.importers.zeroeval import default_data_dir
from classifier.jobs import import_source, split_records
from classifier.outcomes_io import OutcomeRecord, read_outcomes

SETS: dict[str, tuple[str, dict[str, str] | None]] = {
    "zeroeval3": ("zeroeval", None),
    "zeroeval2": (
        "zeroeval",
        {"local-7b": "Qwen2.5-7B-Instruct", "premium": "gpt-4o-2024-08-06"},
    ),
    "gsm8k-openai": ("gsm8k-openai", None),
    "llmrouter": ("llmrouter", None),
    "llmrouter2": (
        "llmrouter",
        {"cheap": "gemma-2-9b-it", "best": "llama-3.1-nemotron-51b-instruct"},
    ),
    "alpaca-eval": ("alpaca-eval", None),
}
LEARNED = ("knn20", "logreg", "mf", "mlp", "task_complexity")


def _features(records: list[OutcomeRecord]) -> tuple[Any, dict[str, int], Any]:
    from classifier.embedding_cache import CachedPromptEmbedder
    from classifier.train import embedder_featurizer

    index: dict[str, int] = {}
    texts: list[str] = []
    for r in records:
        if r.prompt_id not in index:
            index[r.prompt_id] = len(texts)
            texts.append(r.prompt)
    x = embedder_featurizer(CachedPromptEmbedder(), 1_000_000)(texts)
    row_of_text = {t: i for i, t in enumerate(texts)}
    return x, index, lambda ts: x[[row_of_text[t] for t in ts]]


def run_split(
    records: list[OutcomeRecord], x: Any, index: dict[str, int], featurize: Any, seed: int
) -> dict[str, Any]:
    from classifier.features import feature_names
    from classifier.train import evaluate_split, train

    train_recs, test_recs = split_records(records, test_fraction=0.2, seed=seed)
    model = train(
        train_recs,
        seed=seed,
        featurize=featurize,
        feature_names=feature_names(),
        test_fraction=0.0,
    )
    return _summary(evaluate_split(model, x, index, train_recs, test_recs))


def run_folds(
    records: list[OutcomeRecord], x: Any, index: dict[str, int], folds: int, seed: int
) -> dict[str, Any]:
    from classifier.crossval import cross_validate
    from classifier.features import feature_names

    return _summary(
        cross_validate(records, x, index, folds=folds, seed=seed, feature_names=feature_names())
    )


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    methods = report["routing"]["methods"]
    versus = report["routing"]["versus"]
    worst = max(report["per_arm"].items(), key=lambda kv: kv[1]["ece"])
    return {
        "methods": {
            n: {"apgr": m["apgr"], "cost_at_95": m["cost_at_95"], "gap_r": m.get("gap_r")}
            for n, m in methods.items()
        },
        "worst_ece_arm": worst[0],
        "worst_ece": worst[1]["ece"],
        "worst_ece_calibrated_p95": worst[1]["ece_if_calibrated_p95"],
        "ahead": _significant(versus, router_ahead=True),
        "behind": _significant(versus, router_ahead=False),
    }


def _significant(versus: dict[str, Any], *, router_ahead: bool) -> dict[str, list[str]]:
    """Per metric, the baselines whose 90% interval of (router − baseline) lies wholly on
    the router's side (``router_ahead``) or wholly on theirs. The router is ahead on APGR
    above zero and on cost@95 below it."""
    out: dict[str, list[str]] = {}
    for key, better in (("apgr", 1.0), ("cost_at_95", -1.0)):
        side = better if router_ahead else -better
        out[key] = [
            n for n in LEARNED if min(side * versus[n][key]["lo"], side * versus[n][key]["hi"]) > 0
        ]
    return out


def _c95(v: float | None) -> float:
    return 1.0 if v is None else v


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--outcomes", type=Path, nargs="*", default=[])
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--folds", type=int, default=0, help="K-fold cross-validation")
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    data = args.data or default_data_dir()
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, dict[int, Any]] = defaultdict(dict)
    named = [n for n in args.sets.split(",") if n]
    unknown = [n for n in named if n not in SETS]
    if unknown:
        parser.error(f"unknown set(s) {unknown}; known: {', '.join(SETS)}")
    for name in [*named, *(str(f) for f in args.outcomes)]:
        if name in SETS:
            source, tiers = SETS[name]
            records = import_source(source, data_dir=data, tiers=tiers)
        else:
            records = read_outcomes(Path(name))
        x, index, featurize = _features(records)
        for seed in seeds:
            if args.folds:
                r = run_folds(records, x, index, args.folds, seed)
            else:
                r = run_split(records, x, index, featurize, seed)
            results[name][seed] = r
            m = r["methods"]
            ba = max(LEARNED, key=lambda n: m[n]["apgr"])
            bc = min(LEARNED, key=lambda n: _c95(m[n]["cost_at_95"]))
            print(
                f"{name} seed {seed}: APGR {m['router']['apgr']:.3f} (best baseline {ba} "
                f"{m[ba]['apgr']:.3f}), cost@95 {_c95(m['router']['cost_at_95']):.3f} "
                f"(best baseline {bc} {_c95(m[bc]['cost_at_95']):.3f}); worst ECE "
                f"{r['worst_ece']:.3f} ({r['worst_ece_arm']}; a calibrated model: ≤ "
                f"{r['worst_ece_calibrated_p95']:.3f} in 95% of draws); significantly "
                f"ahead of {len(r['ahead']['apgr'])}/{len(r['ahead']['cost_at_95'])}, behind "
                f"{len(r['behind']['apgr'])}/{len(r['behind']['cost_at_95'])} baselines "
                "(APGR/cost@95)",
                flush=True,
            )
        names = list(results[name][seeds[0]]["methods"])
        print(f"{name}, mean ± sd over seeds {args.seeds}:")
        for n in names:
            a = [results[name][s]["methods"][n]["apgr"] for s in seeds]
            c = [_c95(results[name][s]["methods"][n]["cost_at_95"]) for s in seeds]
            g = [results[name][s]["methods"][n]["gap_r"] for s in seeds]
            gap = "" if None in g else f"   gap r {np.mean(g):.3f}"
            print(
                f"  {n:16s} APGR {np.mean(a):.3f} ± {np.std(a):.3f}   "
                f"cost@95 {np.mean(c):.3f} ± {np.std(c):.3f}{gap}"
            )
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
