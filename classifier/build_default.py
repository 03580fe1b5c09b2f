"""Rebuild the shipped predictor from the public ZeroEval data, end to end.

``python -m classifier.build_default [--data ../shared/data] [--out classifier/models/default]
[--seed 0]``: import outcome records → embed the prompts with the ONNX embedder → train →
five-fold cross-validate the same training (metrics only) → export ``model.onnx`` +
``metadata.json`` → write ``MODEL_CARD.md``.
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

EMBED_BATCH = 1_000_000
CV_FOLDS = 5


def records_digest(records: Sequence[OutcomeRecord]) -> str:
    """sha256 over the records as canonical JSON lines."""
    h = hashlib.sha256()
    for r in records:
        h.update(json.dumps(r.to_json(), sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


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
    from classifier.model_card import model_card as card

    td = meta["training_data"]
    src = td["sources"][0]
    arms = meta["arms"]
    data_lines = [
        f"- {src['name']} raw outputs ({src['repository']}, commit `{src['commit']}`), "
        f"licence {src['license']}: prompts answered by all three models (full information): "
        + ", ".join(f"{t} {n}" for t, n in td["prompts_per_task"].items())
        + f"; {td['records']} records (sha256 `{td['records_sha256'][:16]}…`).",
        "",
        "| task | " + " | ".join(arms) + " |",
        "|---|" + "---|" * len(arms),
        *(
            f"| {task} | " + " | ".join(models.get(a.split("/")[0], "?") for a in arms) + " |"
            for task, models in src["tasks"].items()
        ),
        "",
        "- Arm = `<tier>/greedy`: one greedy answer of the model (temperature 0). ZeroEval has "
        "no GSM8K runs of Qwen2.5-7B/32B-Instruct, so Qwen2-7B-Instruct and gemma-2-27b-it "
        "stand in for those tiers on GSM8K; the tiers are stand-ins, not the models the "
        "service runs.",
        f"- Scoring: {td['scoring']}",
        f"- Tokens: {td['tokens']}. Input tokens are those of the prompt as ZeroEval sent it.",
        "- Cost: tokens × prices in USD per million input/output tokens: "
        + ", ".join(f"{t} {p['input']:g}/{p['output']:g}" for t, p in td["prices_per_mtok"].items())
        + ".",
        "- The embedded text is the question or problem itself, not ZeroEval's template.",
        "",
        "Attribution: this model is trained on data derived from ZeroEval "
        "(github.com/WildEval/ZeroEval, formerly yuchenlin/ZeroEval; © its authors), "
        "licensed under the Apache License 2.0.",
    ]
    limits = [
        "Three benchmarks only (grade-school math, competition math level 5, Python output "
        "prediction); prompts from other domains are out of distribution and their "
        "predictions are little more than the arms' base rates.",
        "MATH level 5 correctness compares first numbers only, so it is approximate.",
        "Token counts and hence costs are estimates from a different tokenizer; predicted "
        "tokens are per sample for one greedy answer under ZeroEval's JSON answer format.",
        "Prompts longer than the embedder's 256-token window are embedded as a head and a "
        "tail chunk, in the service as in the offline commands; the training prompts here "
        "are short, so long prompts are out of distribution.",
        "Success probabilities describe these particular models; retrain on logged "
        "outcomes before relying on it.",
    ]
    return card(
        meta,
        title="Default predictor",
        command=f"python -m classifier.build_default --seed {meta['training']['seed']}",
        data_lines=data_lines,
        limits=limits,
        build_seconds=build_seconds,
    )


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
    from classifier.embedding_cache import CachedPromptEmbedder
    from classifier.onnx_export import save_model
    from classifier.train import embedder_featurizer, train

    t0 = time.perf_counter()
    embedder = OnnxEmbedder.load(cache_dir)
    prompt_embedder = CachedPromptEmbedder(cache_dir)

    def count(texts: Sequence[str]) -> list[int]:
        return [embedder.count_tokens(t) for t in texts]

    records = zeroeval.import_zeroeval(data_dir, tiers=tiers, prices=prices, count_tokens=count)
    models = zeroeval.resolve_models(data_dir, tiers=tiers)
    t_import = time.perf_counter()
    print(f"imported {len(records)} records in {t_import - t0:.1f} s", file=sys.stderr)
    arms = [f"{tier}/{zeroeval.STRATEGY}" for tier in tiers]
    embed = embedder_featurizer(prompt_embedder, EMBED_BATCH)
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
    model.metrics["cross_validation"] = _cross_validated(records, featurize, embedder.dim, seed)
    print(f"cross-validated in {time.perf_counter() - t_train:.1f} s", file=sys.stderr)
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


def _cross_validated(
    records: Sequence[OutcomeRecord],
    featurize: Any,
    dim: int,
    seed: int,
) -> dict[str, Any]:
    """The same training, five-fold cross-validated on every prompt (``eval --folds 5``),
    without the per-fold details."""
    from classifier.crossval import cross_validate
    from classifier.evaluate import distinct_prompts

    ids, texts = distinct_prompts(records)
    x = featurize(texts)
    report = cross_validate(
        records,
        x,
        {pid: i for i, pid in enumerate(ids)},
        folds=CV_FOLDS,
        seed=seed,
        feature_names=feats.feature_names(dim),
    )
    return {key: report[key] for key in ("folds", "seed", "test_prompts", "per_arm", "routing")}


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
