"""The offline jobs behind ``ttc-router data import|split``, ``train``, ``predict``, ``eval``.

Each job reads and writes the formats of ``spec/outcomes.md``; progress is reported
through plain callbacks so the command line can draw bars.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from classifier.outcomes_io import (
    OutcomeRecord,
    iter_json_objects,
    prepare_output,
    prompt_id_of,
    read_outcomes,
    warn_if_prompt_texts_differ,
    write_outcomes,
)
from classifier.score_scale import on_unit_scale, scale_from_metadata
from router.core.types import Price
from router.errors import InvalidRequest

SOURCES = ("zeroeval", "llmrouter", "gsm8k-openai", "alpaca-eval")
Progress = Callable[[str, float], None]


def _no_progress(what: str, fraction: float) -> None:
    return None


def import_source(
    source: str,
    *,
    data_dir: Path,
    tiers: Mapping[str, str] | None = None,
    prices: Mapping[str, Price] | None = None,
    arms: Sequence[str] | None = None,
    assumed_output_tokens: int | None = None,
) -> list[OutcomeRecord]:
    """Outcome records from a named public set under ``data_dir`` or a CSV, JSONL or Parquet
    table.

    ``tiers`` maps tier → source model (ZeroEval, GSM8K-OpenAI, AlpacaEval) or selects models
    (LLMRouter: tier names are ignored, the model names are used); ``prices`` are per
    tier (per model for LLMRouter) in USD per million tokens.
    """
    from classifier.importers import alpaca_eval, gsm8k_openai, llmrouter, table, zeroeval

    if source == "zeroeval":
        kwargs: dict[str, Any] = {}
        if tiers:
            kwargs["tiers"] = dict(tiers)
        if prices:
            kwargs["prices"] = dict(prices)
        return zeroeval.import_zeroeval(data_dir, **kwargs)
    if source == "llmrouter":
        return llmrouter.import_llmrouter(
            data_dir / "llmrouter",
            models=list(tiers.values()) if tiers else None,
            prices=prices,
            assumed_output_tokens=assumed_output_tokens or llmrouter.DEFAULT_ASSUMED_OUTPUT_TOKENS,
        )
    if source == "gsm8k-openai":
        return gsm8k_openai.import_gsm8k_openai(
            data_dir / "gsm8k-openai",
            tiers=dict(tiers) if tiers else gsm8k_openai.DEFAULT_TIERS,
            prices=dict(prices) if prices else gsm8k_openai.DEFAULT_PRICES,
        )
    if source == "alpaca-eval":
        return alpaca_eval.import_alpaca_eval(
            data_dir / "alpaca-eval",
            tiers=dict(tiers) if tiers else alpaca_eval.DEFAULT_TIERS,
            prices=dict(prices) if prices else alpaca_eval.DEFAULT_PRICES,
        )
    path = Path(source)
    if not path.is_file():
        raise InvalidRequest(
            f"unknown source {source!r}: give one of {', '.join(SOURCES)} or a CSV, JSONL or "
            "Parquet file"
        )
    return table.import_table(path, arms=arms, prices=prices)


def split_records(
    records: Sequence[OutcomeRecord], *, test_fraction: float, seed: int
) -> tuple[list[OutcomeRecord], list[OutcomeRecord]]:
    """(train, test) by prompt with the same seeded rule ``train`` uses."""
    from classifier.train import prompt_strata, split_prompts

    if not 0.0 < test_fraction < 1.0:
        raise InvalidRequest("--test-fraction must be in (0, 1)")
    # strata read "success" as a score of at least half the scale, so a table on another
    # scale is stratified as train and eval --folds see it
    strata = prompt_strata(on_unit_scale(records)[0])
    test = split_prompts([r.prompt_id for r in records], seed, test_fraction, strata)
    return [r for r in records if r.prompt_id not in test], [
        r for r in records if r.prompt_id in test
    ]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_many(files: Sequence[Path]) -> list[OutcomeRecord]:
    if not files:
        raise InvalidRequest("no outcome files given")
    records: list[OutcomeRecord] = []
    for f in files:
        got = read_outcomes(f)
        if not got:
            raise InvalidRequest(f"{f}: no outcome records")
        records.extend(got)
    warn_if_prompt_texts_differ(records, ", ".join(map(str, files)))
    return records


def check_arms(
    records: Sequence[OutcomeRecord], arms: Sequence[str], files: Sequence[Path]
) -> None:
    """Every requested arm has records, and there are at least two arms."""
    present = {r.arm for r in records}
    where = ", ".join(map(str, files))
    missing = [a for a in arms if a not in present]
    if missing:
        raise InvalidRequest(
            f"{where}: no records for arm(s) {missing}; arms present: {sorted(present)}"
        )
    if not 2 <= len(arms) <= 64:
        raise InvalidRequest(f"{where}: need between 2 and 64 arms to route, got {len(arms)}")


def train_job(
    files: Sequence[Path],
    out_dir: Path,
    *,
    arms: Sequence[str] | None = None,
    seed: int = 0,
    test_fraction: float = 0.2,
    refit: bool = True,
    prices: Mapping[str, Price] | None = None,
    embedder: Any = None,
    progress: Progress | None = None,
    version_prefix: str = "model",
) -> dict[str, Any]:
    """Train on outcome files and write ``model.onnx``, ``metadata.json``, ``MODEL_CARD.md``."""
    from classifier.embedding_cache import CachedPromptEmbedder
    from classifier.features import feature_names, features_for
    from classifier.model_card import model_card
    from classifier.onnx_export import save_model
    from classifier.train import train

    report = progress or _no_progress
    t0 = time.perf_counter()
    prepare_output(out_dir, "--out")
    records = read_many(files)
    arm_list = list(arms) if arms else sorted({r.arm for r in records})
    check_arms(records, arm_list, files)
    records, scale = on_unit_scale(records, arm_list)
    emb = embedder or CachedPromptEmbedder()

    def featurize(texts: Sequence[str]) -> Any:
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            report(f"embedding {done}/{len(texts)} prompts", 0.0)

        return features_for(emb.embed(texts, progress=tick), texts)

    model = train(
        records,
        seed=seed,
        arms=arm_list,
        featurize=featurize,
        feature_names=feature_names(emb.dim),
        prices=prices,
        test_fraction=test_fraction,
        refit=refit,
        progress=report,
    )
    training_data = {
        "files": [
            {"path": str(f.resolve()), "sha256": file_digest(f), "records": len(read_outcomes(f))}
            for f in files
        ],
        "records": len(records),
        "prompts": model.counts["prompts"],
    }
    meta = save_model(
        model,
        out_dir,
        version_prefix=version_prefix,
        training_data=training_data,
        score_scale=scale.to_json() if scale else None,
    )
    elapsed = time.perf_counter() - t0
    data_lines = [
        f"- `{d['path']}`: {d['records']} records, sha256 `{d['sha256'][:16]}…`"
        for d in training_data["files"]
    ]
    card = model_card(
        meta,
        title="Predictor",
        command="ttc-router train --outcomes "
        + " ".join(str(f) for f in files)
        + f" --out {out_dir} --seed {seed}",
        data_lines=data_lines,
        limits=[
            "Predictions describe the arms as they behaved in the training data; prompts "
            "unlike the training prompts get little more than the arms' base rates.",
            "Arms whose records carry no output_tokens get a constant token estimate "
            "(see `tokens_observed` in metadata.json); their cost is still predicted from "
            "the records' cost_usd.",
        ],
        build_seconds=elapsed,
    )
    (out_dir / "MODEL_CARD.md").write_text(card, encoding="utf-8")
    return meta


def read_prompts(path: Path) -> tuple[list[str], list[str]]:
    """(prompt ids, prompts) of an outcome file or a JSONL (or Parquet) of {prompt_id,
    prompt}."""
    ids: list[str] = []
    texts: list[str] = []
    seen: set[str] = set()
    for lineno, obj in iter_json_objects(path):
        pid, prompt = prompt_id_of(obj.get("prompt_id")), obj.get("prompt")
        if pid is None:
            raise InvalidRequest(
                f"{path}:{lineno}: field 'prompt_id' must be a non-empty string (or an integer)"
            )
        if not isinstance(prompt, str) or not prompt:
            raise InvalidRequest(f"{path}:{lineno}: field 'prompt' must be a non-empty string")
        if pid not in seen:
            seen.add(pid)
            ids.append(pid)
            texts.append(prompt)
    if not ids:
        raise InvalidRequest(f"{path}: no prompts")
    return ids, texts


def predict_job(
    model_dir: Path,
    prompts_file: Path,
    out: Path,
    *,
    embedder: Any = None,
    progress: Progress | None = None,
    batch: int = 512,
) -> int:
    """Write the spec's predictions (JSON Lines) for every distinct prompt; returns the count.

    Embedding, then ``OnnxPredictor.predict_table`` (ONNX Runtime, the service's predictor)."""
    from classifier.embedding_cache import CachedPromptEmbedder
    from classifier.predictor import OnnxPredictor

    report = progress or _no_progress
    predictor = OnnxPredictor.load(model_dir)
    scale = scale_from_metadata(predictor.metadata)
    ids, texts = read_prompts(prompts_file)
    prepare_output(out.parent, "--out")
    emb = embedder or CachedPromptEmbedder()
    arms = list(predictor.arms)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for start in range(0, len(ids), batch):
            part = texts[start : start + batch]
            table = predictor.predict_table(emb.embed(part), part)
            for i, pid in enumerate(ids[start : start + batch]):
                line = {
                    "prompt_id": pid,
                    "model": predictor.version,
                    "arms": {
                        a: {
                            "p_success": round(
                                scale.from_unit(float(table.p_success[i, j]))
                                if scale
                                else float(table.p_success[i, j]),
                                6,
                            ),
                            "cost_usd": float(f"{table.cost_usd[i, j]:.6g}"),
                            "output_tokens": round(float(table.tokens[i, j]), 1),
                            "output_tokens_hi": round(float(table.tokens_hi[i, j]), 1),
                        }
                        for j, a in enumerate(arms)
                    },
                }
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")
            report(
                f"predicted {min(start + batch, len(ids))}/{len(ids)}",
                (start + len(part)) / len(ids),
            )
    tmp.replace(out)
    return len(ids)


def training_files(model_dir: Path) -> list[Path]:
    """The outcome files a model was trained on, from its metadata."""
    meta_path = model_dir / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"{meta_path}: cannot read: {exc}") from None
    files = [Path(d["path"]) for d in meta.get("training_data", {}).get("files", [])]
    if not files or not all(f.is_file() for f in files):
        raise InvalidRequest(
            f"{model_dir}: the model's training files are not recorded or not found; "
            "give them with --train-outcomes (the baselines are fitted on them)"
        )
    return files


def eval_job(
    model_dir: Path,
    test_files: Sequence[Path],
    *,
    train_files: Sequence[Path] | None = None,
    embedder: Any = None,
    plot: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Metrics of the model and the baselines on ``test_files`` (and the plot)."""
    import importlib.util

    from classifier import metrics as M
    from classifier.embedding_cache import CachedPromptEmbedder
    from classifier.evaluate import evaluate_model, plot_curves

    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise InvalidRequest(
            "--plot needs matplotlib, which is not installed: pip install matplotlib"
        )
    if plot is not None:
        prepare_output(plot.parent, "--plot")
    files = list(train_files) if train_files else training_files(model_dir)
    curves: dict[str, M.Curve] = {}
    report = evaluate_model(
        model_dir,
        list(test_files),
        files,
        embedder=embedder or CachedPromptEmbedder(),
        seed=seed,
        curves_out=curves,
    )
    if plot is not None:
        if not curves:
            raise InvalidRequest("no full-information test prompts: nothing to plot")
        plot_curves(curves, f"{report['model']} on {report['test_prompts']} prompts", plot)
    return report


def cv_job(
    files: Sequence[Path],
    *,
    folds: int,
    seed: int = 0,
    arms: Sequence[str] | None = None,
    prices: Mapping[str, Price] | None = None,
    embedder: Any = None,
    plot: Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """K-fold cross-validated metrics of the router and the baselines on ``files``
    (:mod:`classifier.crossval`); each fold model is exported and predicts its held-out
    prompts through ONNX Runtime, as the service would."""
    import importlib.util
    import itertools
    import tempfile

    from classifier import metrics as M
    from classifier.crossval import FoldPrediction, cross_validate
    from classifier.embedding_cache import CachedPromptEmbedder
    from classifier.evaluate import distinct_prompts, plot_curves
    from classifier.features import feature_names, features_for
    from classifier.onnx_export import save_model
    from classifier.predictor import OnnxPredictor
    from classifier.train import TrainedModel

    if plot is not None and importlib.util.find_spec("matplotlib") is None:
        raise InvalidRequest(
            "--plot needs matplotlib, which is not installed: pip install matplotlib"
        )
    if plot is not None:
        prepare_output(plot.parent, "--plot")
    report = progress or _no_progress
    records = read_many(files)
    arm_list = list(arms) if arms else sorted({r.arm for r in records})
    check_arms(records, arm_list, files)
    records, scale = on_unit_scale(records, arm_list)
    emb = embedder or CachedPromptEmbedder()
    ids, texts = distinct_prompts(records)
    report(f"embedding {len(texts)} prompts", 0.0)
    e = emb.embed(texts)
    x = features_for(e, texts)
    index = {pid: i for i, pid in enumerate(ids)}

    fold_no = itertools.count()
    with tempfile.TemporaryDirectory(prefix="ttc-router-cv-") as tmp:

        def predict(model: TrainedModel, rows: Any) -> FoldPrediction:
            out = Path(tmp) / f"fold-{next(fold_no)}"
            save_model(model, out, version_prefix="fold")
            table = OnnxPredictor.load(out).predict_table(e[rows], [texts[i] for i in rows])
            return FoldPrediction(
                table.p_success, np.log(table.tokens), np.log(table.tokens_hi), table.cost_usd
            )

        curves: dict[str, M.Curve] = {}
        result = cross_validate(
            records,
            x,
            index,
            folds=folds,
            seed=seed,
            feature_names=feature_names(emb.dim),
            arms=arm_list,
            prices=prices,
            predict=predict,
            progress=report,
            curves_out=curves,
        )
    result["files"] = [str(f) for f in files]
    if scale is not None:
        result["score_scale"] = scale.to_json()
    if plot is not None:
        if not curves:
            raise InvalidRequest("no full-information prompts: nothing to plot")
        plot_curves(curves, f"{result['model']} on {result['test_prompts']} prompts", plot)
    return result


def format_report(report: Mapping[str, Any]) -> str:
    """Plain-text tables of an eval report."""
    from classifier.model_card import per_arm_lines, routing_lines

    lines = [f"model {report['model']} on {report['test_prompts']} prompts", ""]
    if report.get("test_prompts_in_training"):
        lines += [
            f"Warning: {report['test_prompts_in_training']} of the {report['test_prompts']} "
            "test prompts also appear in the model's training files (the same id, or the "
            "same text under another id); the figures on those are not held out.",
            "",
        ]
    if "score_scale" in report:
        lo, hi = report["score_scale"]["lo"], report["score_scale"]["hi"]
        lines += [
            f"Scores run from {lo:g} to {hi:g}; they are mapped onto [0, 1] (s - {lo:g}) / "
            f"{hi - lo:g}, and mean p, Brier and ECE are on that scale.",
            "",
        ]
    lines += per_arm_lines(report["per_arm"])
    if "routed_arms" in report:
        lines += [
            "",
            f"The test file(s) hold {len(report['routed_arms'])} of the model's arms; routing "
            f"is measured among those: {', '.join(report['routed_arms']) or 'none'}.",
        ]
    if "routing" in report:
        lines += ["", *routing_lines(report["routing"])]
    if "routing_skipped" in report:
        lines += ["", f"Routing not measured: {report['routing_skipped']}."]
    return "\n".join(lines)


def write_records(path: Path, records: Sequence[OutcomeRecord]) -> int:
    if not records:
        raise InvalidRequest("no records to write")
    prepare_output(path.parent, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_outcomes(path, records)


def mean_scores(records: Sequence[OutcomeRecord]) -> dict[str, float]:
    by: dict[str, list[float]] = {}
    for r in records:
        by.setdefault(r.arm, []).append(r.score)
    return {a: float(np.mean(v)) for a, v in sorted(by.items())}


__all__ = [
    "SOURCES",
    "eval_job",
    "format_report",
    "import_source",
    "mean_scores",
    "predict_job",
    "read_prompts",
    "split_records",
    "train_job",
    "training_files",
    "write_records",
]
