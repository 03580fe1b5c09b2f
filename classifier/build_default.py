"""Rebuild the shipped predictor from the public ZeroEval data, end to end.

``python -m classifier.build_default [--data ../shared/data] [--out classifier/models/default]
[--seed 0]``: import outcome records → embed the prompts with the ONNX embedder → train →
export ``model.onnx`` + ``metadata.json`` → write ``MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classifier import features as feats
from classifier.importers import zeroeval
from classifier.outcomes_io import OutcomeRecord
from classifier.predictor import default_model_dir
from router.core.types import Price
from router.errors import RouterError

EMBED_BATCH = 32


def records_digest(records: Sequence[OutcomeRecord]) -> str:
    """sha256 over the records as canonical JSON lines."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r.to_json(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "unreached"
    if isinstance(x, float):
        return "n/a" if x != x else f"{x:.{digits}f}"
    return str(x)


def _training_data(
    records: Sequence[OutcomeRecord],
    models: Mapping[str, Mapping[str, str]],
    prices: Mapping[str, Price],
) -> dict[str, Any]:
    by_task: dict[str, set[str]] = defaultdict(set)
    acc: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        task = r.task or "?"
        by_task[task].add(r.prompt_id)
        acc[task][r.arm].append(r.score)
    return {
        "sources": [
            {
                "name": "ZeroEval",
                "repository": "github.com/yuchenlin/ZeroEval",
                "commit": zeroeval.ZEROEVAL_COMMIT,
                "license": "Apache-2.0",
                "tasks": {zeroeval.TASKS[t]: dict(m) for t, m in models.items()},
            }
        ],
        "records": len(records),
        "records_sha256": records_digest(records),
        "prompts_per_task": {t: len(ids) for t, ids in sorted(by_task.items())},
        "mean_score_per_task": {
            t: {a: round(float(np.mean(v)), 4) for a, v in sorted(arms.items())}
            for t, arms in sorted(acc.items())
        },
        "prices_per_mtok": {
            t: {"input": p.input_per_mtok, "output": p.output_per_mtok} for t, p in prices.items()
        },
        "scoring": zeroeval.SCORING,
        "tokens": "counted with the all-MiniLM-L6-v2 WordPiece tokenizer (approximates each "
        "model's own tokenizer)",
    }


def model_card(meta: Mapping[str, Any], build_seconds: float) -> str:
    """MODEL_CARD.md text for a built model."""
    td = meta["training_data"]
    src = td["sources"][0]
    m = meta["metrics"]
    lines = [
        f"# Default predictor `{meta['version']}`",
        "",
        f"Built {meta['created']} by `python -m classifier.build_default --seed "
        f"{meta['training']['seed']}` in {build_seconds:.0f} s on 2 CPU cores.",
        "",
        "## What it does",
        "For one prompt it predicts, per arm, the probability that the answer is correct "
        "(`p_success`) and the output tokens per sample (expected and a 90th-percentile "
        "estimate). The router weighs these against each arm's price. Input: the prompt's "
        "all-MiniLM-L6-v2 embedding (384 values, ONNX Runtime fp32) followed by "
        f"{len(meta['feature_set']['text_features'])} cheap text features "
        f"(`{meta['feature_set']['name']}` v{meta['feature_set']['version']}). Model: one "
        "logistic regression (success) and one ridge regression (log output tokens) per arm "
        "on standardised features, trained with scikit-learn and exported with skl2onnx as "
        "one ONNX graph.",
        "",
        "## Intended use",
        "A starting point for routing math word problems, competition math and short code-"
        "reasoning prompts between a ~7B local model, a ~32B self-hosted model and a premium "
        "API model, until the service has logged enough of its own traffic to retrain on.",
        "",
        "## Arms and the models behind them",
        "",
        "| task | " + " | ".join(meta["arms"]) + " |",
        "|---|" + "---|" * len(meta["arms"]),
    ]
    for task, models in src["tasks"].items():
        row = [models.get(a.split("/")[0], "?") for a in meta["arms"]]
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    lines += [
        "",
        "Arm = `<tier>/greedy`: one greedy answer of the model (temperature 0). ZeroEval has no "
        "GSM8K runs of Qwen2.5-7B/32B-Instruct, so Qwen2-7B-Instruct and gemma-2-27b-it stand "
        "in for those tiers on GSM8K; the tiers are stand-ins, not the models the service runs.",
        "",
        "## Training data",
        f"- {src['name']} raw outputs ({src['repository']}, commit `{src['commit']}`), "
        f"licence {src['license']}: prompts answered by all three models (full information): "
        + ", ".join(f"{t} {n}" for t, n in td["prompts_per_task"].items())
        + f"; {td['records']} records (sha256 `{td['records_sha256'][:16]}…`).",
        f"- Scoring: {td['scoring']}",
        f"- Tokens: {td['tokens']}. Input tokens are those of the prompt as ZeroEval sent it "
        "(question plus its answer-format instruction).",
        "- Cost: tokens × prices in USD per million input/output tokens: "
        + ", ".join(f"{t} {p['input']:g}/{p['output']:g}" for t, p in td["prices_per_mtok"].items())
        + ".",
        "- The embedded text is the question or problem itself, not ZeroEval's template.",
        "",
        "Attribution: this model is trained on data derived from ZeroEval "
        "(github.com/WildEval/ZeroEval, formerly yuchenlin/ZeroEval; © its authors), "
        "licensed under the Apache License 2.0. The GSM8K/MATH correctness table used is the "
        "one derived from ZeroEval's raw outputs in the project's shared data folder.",
        "",
        "## Held-out metrics",
        f"Seeded split by prompt: {meta['training']['counts']['train_prompts']} training "
        f"prompts, {meta['training']['counts']['test_prompts']} held out; the shipped model "
        "is the one fitted on the training prompts only.",
        "",
        "| arm | n | mean score | mean p | Brier | ECE (10 bins) | tokens within 2× | "
        "≤ p90 estimate | C |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, e in m["per_arm"].items():
        lines.append(
            f"| {arm} | {e['n']} | {_fmt(e['mean_score'])} | {_fmt(e['mean_p'])} | "
            f"{_fmt(e['brier'])} | {_fmt(e['ece'])} | {_fmt(e.get('tokens_within_2x'))} | "
            f"{_fmt(e.get('tokens_hi_coverage'))} | {e['c']:g} |"
        )
    routing = m.get("routing")
    if routing:
        lines += [
            "",
            f"Routing on the {routing['prompts']} held-out prompts (spec/outcomes.md "
            f"definitions; cheap arm {routing['cheap_arm']}: score "
            f"{_fmt(routing['score_cheap'])} at ${routing['cost_cheap']:.6f}/prompt; best arm "
            f"{routing['best_arm']}: score {_fmt(routing['score_best'])} at "
            f"${routing['cost_best']:.6f}/prompt). Learned baselines use the same cost "
            "estimates as the router.",
            "",
            "| method | APGR | cost@95 | best mean score |",
            "|---|---|---|---|",
        ]
        for name, r in routing["methods"].items():
            lines.append(
                f"| {name} | {_fmt(r['apgr'])} | {_fmt(r['cost_at_95'])} | {_fmt(r['max_score'])} |"
            )
    lines += [
        "",
        "## Limits",
        "- Three benchmarks only (grade-school math, competition math level 5, Python output "
        "prediction); prompts from other domains (chat, writing, long documents, other "
        "languages) are out of distribution and their predictions are little more than the "
        "arms' base rates.",
        "- MATH level 5 correctness compares first numbers only, so it is approximate; CRUXEval "
        "correctness compares literal values and counts slightly more answers correct than "
        "ZeroEval's string comparison (about +1–2 points).",
        "- Token counts and hence costs are estimates from a different tokenizer; predicted "
        "tokens are per sample for one greedy answer under ZeroEval's JSON answer format.",
        "- Success probabilities describe these particular models; other models in a tier will "
        "differ. Retrain on logged outcomes before relying on it.",
        "",
        "## Rebuild",
        "`python -m classifier.build_default --data ../shared/data --out "
        "classifier/models/default --seed 0` (the data stay outside the repository). The same "
        "data and seed give the same fitted model; the version carries the build date and "
        "the first 8 hex digits of the ONNX file's sha256.",
        "",
        "## Files",
        f"- `model.onnx` (sha256 `{meta['onnx_sha256']}`): input `features` float32 [N, "
        f"{meta['feature_set']['n_features']}]; outputs `p_success` and `log_tokens`, float32 "
        f"[N, {len(meta['arms'])}], columns in the order of `arms` in `metadata.json`.",
        "- `metadata.json`: version, arms, feature set, high-quantile offsets, prices, "
        "training data and all metrics above.",
        "",
    ]
    return "\n".join(lines)


def build(
    data_dir: Path,
    out_dir: Path,
    *,
    seed: int = 0,
    tiers: Mapping[str, str] = zeroeval.DEFAULT_TIERS,
    prices: Mapping[str, Price] = zeroeval.DEFAULT_PRICES,
    test_fraction: float = 0.2,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Run the whole pipeline and write the model directory; returns the metadata."""
    from classifier.embedder.runtime import OnnxEmbedder
    from classifier.onnx_export import save_model
    from classifier.train import embedder_featurizer, train

    t0 = time.perf_counter()
    embedder = OnnxEmbedder.load(cache_dir)

    def count(texts: Sequence[str]) -> list[int]:
        return [embedder.count_tokens(t) for t in texts]

    records = zeroeval.import_zeroeval(data_dir, tiers=tiers, prices=prices, count_tokens=count)
    models = zeroeval.resolve_models(data_dir, tiers=tiers)
    t_import = time.perf_counter()
    print(f"imported {len(records)} records in {t_import - t0:.1f} s", file=sys.stderr)
    arms = [f"{tier}/{zeroeval.STRATEGY}" for tier in tiers]
    embed = embedder_featurizer(embedder, EMBED_BATCH)
    embed_seconds = 0.0

    def featurize(texts: Sequence[str]) -> NDArray[np.float32]:
        nonlocal embed_seconds
        start = time.perf_counter()
        out = embed(texts)
        embed_seconds += time.perf_counter() - start
        print(f"embedded {len(texts)} prompts in {embed_seconds:.1f} s", file=sys.stderr)
        return out

    model = train(
        records,
        seed=seed,
        arms=arms,
        featurize=featurize,
        feature_names=feats.feature_names(embedder.dim),
        prices=prices,
        test_fraction=test_fraction,
    )
    t_train = time.perf_counter()
    print(f"trained in {t_train - t_import - embed_seconds:.1f} s", file=sys.stderr)
    meta = save_model(
        model,
        out_dir,
        version_prefix="default",
        training_data=_training_data(records, models, prices),
    )
    elapsed = time.perf_counter() - t0
    (out_dir / "MODEL_CARD.md").write_text(model_card(meta, elapsed), encoding="utf-8")
    print(f"wrote {out_dir} ({meta['version']}) in {elapsed:.1f} s", file=sys.stderr)
    return meta


def _arg(parse: Any) -> Any:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except RouterError as exc:
            raise argparse.ArgumentTypeError(exc.message) from None

    return convert


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m classifier.build_default", description=__doc__)
    parser.add_argument("--data", type=Path, default=zeroeval.default_data_dir())
    parser.add_argument("--out", type=Path, default=default_model_dir())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--tiers",
        type=_arg(zeroeval.parse_tiers),
        default=zeroeval.DEFAULT_TIERS,
        help="tier=model,... (ZeroEval model names)",
    )
    parser.add_argument(
        "--prices",
        type=_arg(zeroeval.parse_prices),
        default=zeroeval.DEFAULT_PRICES,
        help="tier=in/out,... in USD per million tokens",
    )
    parser.add_argument("--test-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    try:
        meta = build(
            args.data,
            args.out,
            seed=args.seed,
            tiers=args.tiers,
            prices=args.prices,
            test_fraction=args.test_fraction,
        )
    except RouterError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(json.dumps({"version": meta["version"], "metrics": meta["metrics"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
