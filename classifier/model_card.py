"""MODEL_CARD.md for a trained predictor, from its ``metadata.json``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

MODEL_TEXT = (
    "For one prompt it predicts, per arm, the expected score (`p_success`), the output "
    "tokens per sample (the median answer length and a 90th-percentile estimate) and the "
    "cost of one call. "
    "Input: the prompt's all-MiniLM-L6-v2 embedding (384 values, ONNX Runtime; prompts "
    "longer than the embedder's 256-token window are embedded as a head and a tail chunk, "
    "see `classifier/long_prompts.py`) followed by cheap text features. Success model: a "
    "stack of four learners, each tuned by cross-validation inside `train` (ridge "
    "regression with leave-one-out penalty; cosine kNN over the training prompts at a "
    "CV-chosen k and at k=200, predicting every arm from the neighbours' scores; a "
    "one-hidden-layer network with one output per arm, epochs by CV), combined and "
    "calibrated by a logistic regression on their out-of-fold logits whose form is chosen "
    "by CV. The served scores keep that stack's level per prompt and mix its gaps between "
    "arms with the k=200 neighbourhood's, in the proportion (`gap_weight` in "
    "`metadata.json`) that minimises the out-of-fold error of the predicted score "
    "differences, each arm calibrated again; the served probability is then mixed with the "
    "task × difficulty cells' (the mean scores of the training prompts of the same k-means "
    "task and difficulty band, averaged over five k-means starts), in the proportion "
    "(`cells_weight`) chosen by the same criterion. Tokens: ridge regression on log tokens, "
    "moved onto the median answer length. Cost: ridge regression on log cost. Exported as "
    "one ONNX graph of standard operators."
)


def fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "unreached"
    if isinstance(x, float):
        return "n/a" if x != x else f"{x:.{digits}f}"
    return str(x)


def _gap(x: Any) -> str:
    return "n/a" if x is None else fmt(x)


def _opt(x: Any) -> str:
    return "n/a (no token counts)" if x is None else fmt(x)


def per_arm_lines(per_arm: Mapping[str, Mapping[str, Any]]) -> list[str]:
    lines = [
        "| arm | n | mean score | mean p | Brier | ECE (10 bins) | ECE if calibrated "
        "(median / 95%) | tokens within 2× | ≤ p90 estimate |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm, e in per_arm.items():
        chance = (
            f"{fmt(e['ece_if_calibrated_median'])} / {fmt(e['ece_if_calibrated_p95'])}"
            if "ece_if_calibrated_p95" in e
            else "n/a"
        )
        lines.append(
            f"| {arm} | {e['n']} | {fmt(e['mean_score'])} | {fmt(e['mean_p'])} | "
            f"{fmt(e['brier'])} | {fmt(e['ece'])} | {chance} | "
            f"{_opt(e.get('tokens_within_2x'))} | {_opt(e.get('tokens_hi_coverage'))} |"
        )
    return lines


def _signed(x: float) -> str:
    return "n/a" if x != x else f"{x:+.3f}"


def versus_lines(versus: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The router's lead over each baseline with paired-bootstrap intervals."""
    if not versus:
        return []
    first = next(iter(versus.values()))
    lines = [
        f"Router minus baseline on the same prompts ({first['draws']} paired bootstrap "
        f"resamples, {first['level']:.0%} intervals; APGR: positive is the router ahead, "
        "cost@95: negative is the router ahead, unreached counted as 1.0):",
        "",
        "| baseline | Δ APGR | interval | router ahead | Δ cost@95 | interval | router ahead |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, v in versus.items():
        a, c = v["apgr"], v["cost_at_95"]
        lines.append(
            f"| {name} | {_signed(a['observed'])} | [{_signed(a['lo'])}, {_signed(a['hi'])}] | "
            f"{a['ahead_share']:.0%} | {_signed(c['observed'])} | "
            f"[{_signed(c['lo'])}, {_signed(c['hi'])}] | {c['ahead_share']:.0%} |"
        )
    return lines


def routing_lines(routing: Mapping[str, Any]) -> list[str]:
    methods = routing["methods"]
    two = any("cpt50" in m for m in methods.values())
    head = "| method | APGR | cost@95 | best mean score | gap r |" + (
        " CPT(50%) | CPT(80%) |" if two else ""
    )
    full, total = routing["prompts"], routing.get("test_prompts", routing["prompts"])
    scope = f"{full} full-information prompts"
    if total > full:
        scope = (
            f"{full} full-information prompts (of {total} test prompts; the other "
            f"{total - full} lack a record for some arm, and routing is measured only where "
            "every arm's outcome is known)"
        )
    if routing.get("aggregate"):
        scope += f"; the routing figures are the {routing['aggregate']}"
    lines = [
        f"{scope}; cheap arm {routing['cheap_arm']} "
        f"(score {fmt(routing['score_cheap'])}, ${routing['cost_cheap']:.6f}/prompt), best arm "
        f"{routing['best_arm']} (score {fmt(routing['score_best'])}, "
        f"${routing['cost_best']:.6f}/prompt).",
        "",
        head,
        "|---|---|---|---|---|" + ("---|---|" if two else ""),
    ]
    for name, r in methods.items():
        row = (
            f"| {name} | {fmt(r['apgr'])} | {fmt(r['cost_at_95'])} | {fmt(r['max_score'])} "
            f"| {_gap(r.get('gap_r'))} |"
        )
        if two:
            row += f" {fmt(r.get('cpt50'))} | {fmt(r.get('cpt80'))} |"
        lines.append(row)
    lines += [
        "",
        "gap r: over the prompts, the correlation of each method's predicted score gap between "
        "two arms with the actual gap, averaged over arm pairs; near 0 the method does not "
        "know which arm does better on which prompt.",
    ]
    if routing.get("versus"):
        lines += ["", *versus_lines(routing["versus"])]
    return lines


def _chosen_lines(training: Mapping[str, Any]) -> list[str]:
    """What cross-validation chose for the shipped model, where the metadata records it."""
    if "stack_form" not in training:
        return []
    return [
        f"Chosen by cross-validation for the shipped model: kNN k = {training['knn_k']}, "
        f"stack form `{training['stack_form']}`, gap weight {training['gap_weight']:g} "
        "(1 keeps the stack's own gaps between arms, 0 takes the neighbourhood's), "
        f"cells weight {training.get('cells_weight', 0.0):g} (the task × difficulty cells' "
        "share of the served probability).",
        "",
    ]


def _scale_lines(scale: Mapping[str, float] | None) -> list[str]:
    if not scale:
        return []
    lo, hi = scale["lo"], scale["hi"]
    return [
        f"- Scores run from {lo:g} to {hi:g}; the model was trained on them mapped onto "
        f"[0, 1], (s - {lo:g}) / {hi - lo:g}, and the metrics below are on that scale. "
        "`ttc-router predict` maps `p_success` back onto the table's scale."
    ]


def model_card(
    meta: Mapping[str, Any],
    *,
    title: str,
    command: str,
    data_lines: Sequence[str],
    limits: Sequence[str],
    build_seconds: float,
) -> str:
    """The card: what the model does, its data, held-out metrics, limits, files."""
    m = meta["metrics"]
    counts = meta["training"]["counts"]
    lines = [
        f"# {title} `{meta['version']}`",
        "",
        f"Built {meta['created']} by `{command}` in {build_seconds:.0f} s on 2 CPU cores.",
        "",
        "## What it does",
        MODEL_TEXT,
        "",
        "Arms: " + ", ".join(f"`{a}`" for a in meta["arms"]) + ".",
        "",
        *_chosen_lines(meta["training"]),
        "## Training data",
        *data_lines,
        *_scale_lines(meta.get("score_scale")),
        "",
        "## Held-out metrics",
        "Seeded split by prompt, stratified by task and by which arms succeeded: "
        f"{counts['train_prompts']} training prompts, "
        f"{counts['test_prompts']} held out. Hyper-parameters were chosen by cross-validation "
        "on the training prompts only. "
        + (
            "The shipped model was then refitted on all prompts."
            if meta["training"].get("refit_on_all")
            else "The shipped model is the one fitted on the training prompts only."
        ),
        "",
    ]
    if m.get("per_arm"):
        lines += per_arm_lines(m["per_arm"])
    if m.get("routing"):
        lines += [
            "",
            "Routing (spec/outcomes.md definitions; every learned method is routed with the "
            "router's predicted costs; baselines are described in `classifier/baselines.py`):",
            "",
            *routing_lines(m["routing"]),
        ]
    cv = m.get("cross_validation")
    if cv:
        lines += [
            "",
            "## Cross-validated metrics",
            f"The same training run {cv['folds']} times, each time on all prompts but one "
            f"fold, and tested on that fold (`ttc-router eval --folds {cv['folds']} --seed "
            f"{cv['seed']}`): every one of the {cv['test_prompts']} prompts is tested once. "
            "Calibration and tokens on the pooled held-out predictions:",
            "",
            *per_arm_lines(cv["per_arm"]),
        ]
        if cv.get("routing"):
            lines += ["", "Routing:", "", *routing_lines(cv["routing"])]
    lines += ["", "## Limits", *(f"- {x}" for x in limits), "", "## Files"]
    lines += [
        f"- `model.onnx` (sha256 `{meta['onnx_sha256']}`): input `features` float32 [N, "
        f"{meta['feature_set']['n_features']}]; outputs `p_success`, `log_tokens`, `cost_usd`, "
        f"float32 [N, {len(meta['arms'])}], columns in the order of `arms` in `metadata.json`.",
        "- `metadata.json`: version, arms, feature set, hyper-parameters, training data "
        "digest and all metrics above.",
        "",
    ]
    return "\n".join(lines)


__all__ = [
    "MODEL_TEXT",
    "fmt",
    "model_card",
    "per_arm_lines",
    "routing_lines",
    "versus_lines",
]
