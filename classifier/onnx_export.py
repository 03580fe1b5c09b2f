"""Export a :class:`~classifier.train.TrainedModel` as one ONNX graph plus ``metadata.json``.

Graph (standard ONNX operators only, built here from the fitted coefficients)::

    features [N, F] ─► (x - mean) / scale ─┬─► MatMul W_lr + b ──────────────► linear [N, A]
                                           ├─► MatMul W_tok + b ─────────────► log_tokens
                                           └─► MatMul W_cost + b ─► expm1/1e6 ► cost_usd
    features ─► Gather(kNN columns) ─► unit rows ─► [MatMul projection ─► unit rows] ─►
               MatMul refᵀ ─► TopK ─► Gather sums, counts ─► ReduceSum ─►
               (s + w·prior)/(c + w) ─► logit ─────────────────────────────► knn logits [N, A]
               (once with the broad k, once with the first CV-chosen k of those, which
               TopK returns sorted; the projection only
               for large reference sets, see ``classifier.train.knn_projection``)
    scaled ─► MatMul W1 + b1 ─► Relu ─► MatMul W2 + b2 ───────────────────► network logits
    Concat(linear, near kNN, broad kNN, network) ─► MatMul W_stack + b ─► Sigmoid ─► stack p
    kNN query ─┬─► MatMul centroidsᵀ − ½‖c‖² ─► ArgMax per partition ─► task ─┐
               └─► MatMul w_level + b ─► Greater cuts ─► ReduceSum ─► band ─────┴─►
               Gather table[partition, task·L + band] ─► mean over partitions ─► cell p
    (1 − ω)·stack p + ω·cell p ─────────────────────────────────────────► p_success

All outputs are float32 [N, A], columns in the order of ``metadata["arms"]``.
``log_tokens`` is the natural log of the median output tokens per sample; the high
estimate is ``exp(log_tokens + tokens_hi_log_offset[arm])``; ``cost_usd`` is the
predicted cost of one call of the arm (all samples included).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from classifier import features as feats
from classifier.links import LOGIT_CLIP
from classifier.predictor import (
    INPUT_NAME,
    METADATA_FILE,
    MODEL_FILE,
    OUTPUT_COST,
    OUTPUT_LOG_TOKENS,
    OUTPUT_P,
    SUPPORTED_FORMAT,
)
from classifier.train import (
    DEFAULT_TOKENS,
    PRIOR_WEIGHT,
    TOKENS_HI_QUANTILE,
    TrainedModel,
)

OPSET = 17


def _linear(model: TrainedModel) -> dict[str, np.ndarray[Any, Any]]:
    """Stacked per-arm coefficients: weights [F, A] and biases [A] of each linear head."""
    arms = model.arms
    n_feat = len(model.feature_names)
    w_lr = np.column_stack([model.per_arm[a].classifier.coef_.reshape(-1) for a in arms])
    b_lr = np.asarray([float(model.per_arm[a].classifier.intercept_) for a in arms])
    w_tok = np.zeros((n_feat, len(arms)))
    b_tok = np.full(len(arms), math.log(DEFAULT_TOKENS))
    for j, a in enumerate(arms):
        reg = model.per_arm[a].regressor
        if reg is not None:
            w_tok[:, j] = np.asarray(reg.coef_).reshape(-1)
            b_tok[j] = float(reg.intercept_)
    w_cost = np.column_stack([np.asarray(model.per_arm[a].cost_regressor.coef_) for a in arms])
    b_cost = np.asarray([float(model.per_arm[a].cost_regressor.intercept_) for a in arms])
    w_st = model.stack.weights
    b_st = model.stack.bias
    return {
        "w_lr": w_lr,
        "b_lr": b_lr,
        "w_tok": w_tok,
        "b_tok": b_tok,
        "w_cost": w_cost,
        "b_cost": b_cost,
        "w_stack": w_st,
        "b_stack": b_st,
        "mlp_w1": model.mlp.w1,
        "mlp_b1": model.mlp.b1,
        "mlp_w2": model.mlp.w2,
        "mlp_b2": model.mlp.b2,
    }


def to_onnx(model: TrainedModel) -> Any:
    """One ``onnx.ModelProto`` computing every arm's p_success, log tokens and cost."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_features = len(model.feature_names)
    n_arms = len(model.arms)
    knn = model.knn
    if knn.k > knn.broad_k:
        raise ValueError(f"kNN k {knn.k} exceeds the broad k {knn.broad_k} it is sliced from")
    inits: list[Any] = []

    def const(name: str, value: Any, dtype: Any = np.float32) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    lin = _linear(model)
    for key, value in lin.items():
        const(key, value)
    const("mean", model.scaler.mean_)
    const("scale", model.scaler.scale_)
    const("knn_cols", np.asarray(knn.columns, np.int64), np.int64)
    const("knn_ref_t", np.ascontiguousarray(knn.reference.astype(np.float16).T), np.float16)
    const("knn_sums", knn.sums)
    const("knn_counts", knn.counts)
    const("knn_prior_w", PRIOR_WEIGHT * knn.prior.astype(np.float64))
    const("knn_w", PRIOR_WEIGHT)
    const("knn_k", np.asarray([knn.k], np.int64), np.int64)
    const("knn_broad_k", np.asarray([knn.broad_k], np.int64), np.int64)
    const("zero_i", np.asarray([0], np.int64), np.int64)
    const("eps", 1e-12)
    const("clip_lo", LOGIT_CLIP)
    const("clip_hi", 1.0 - LOGIT_CLIP)
    const("one", 1.0)
    const("micro", 1e-6)
    const("zero", 0.0)

    cells = model.cells
    bags, n_tasks, dim = cells.centroids.shape
    flat_centroids = cells.centroids.reshape(bags * n_tasks, dim)
    const("cell_c_t", np.ascontiguousarray(flat_centroids.T))
    const("cell_half", 0.5 * np.sum(flat_centroids * flat_centroids, axis=1))
    const("cell_bag_shape", np.asarray([0, bags, n_tasks], np.int64), np.int64)
    const("cell_lw", cells.level_w.reshape(-1, 1))
    const("cell_lb", np.asarray([cells.level_b]))
    const("cell_cuts", cells.cuts)
    const("cell_levels", np.asarray(cells.levels, np.int64), np.int64)
    n_cells = cells.table.shape[1]
    const("cell_offsets", np.arange(bags, dtype=np.int64) * n_cells, np.int64)
    const("cell_table", cells.table.reshape(bags * n_cells, -1))
    const("stack_share", 1.0 - model.cells_weight)
    const("cell_share", model.cells_weight)

    n = helper.make_node
    projection_nodes: list[Any] = []
    knn_query = "knn_q"
    if knn.projection is not None:
        const("knn_proj", knn.projection)
        knn_query = "knn_pq"
        projection_nodes = [
            n("MatMul", ["knn_q", "knn_proj"], ["knn_p_raw"]),
            n("Mul", ["knn_p_raw", "knn_p_raw"], ["knn_p_sq"]),
            n("ReduceSum", ["knn_p_sq", "axis1"], ["knn_p_ss"], keepdims=1),
            n("Sqrt", ["knn_p_ss"], ["knn_p_norm_raw"]),
            n("Max", ["knn_p_norm_raw", "eps"], ["knn_p_norm"]),
            n("Div", ["knn_p_raw", "knn_p_norm"], [knn_query]),
        ]
    space_in = "features" if any(f.startswith("emb_") for f in model.feature_names) else "scaled"
    nodes = [
        n("Sub", [INPUT_NAME, "mean"], ["centred"]),
        n("Div", ["centred", "scale"], ["scaled"]),
        n("MatMul", ["scaled", "w_lr"], ["lr_mm"]),
        n("Add", ["lr_mm", "b_lr"], ["lr_logit"]),
        n("MatMul", ["scaled", "w_tok"], ["tok_mm"]),
        n("Add", ["tok_mm", "b_tok"], [OUTPUT_LOG_TOKENS]),
        n("MatMul", ["scaled", "w_cost"], ["cost_mm"]),
        n("Add", ["cost_mm", "b_cost"], ["log1p_micros"]),
        n("Exp", ["log1p_micros"], ["micros_p1"]),
        n("Sub", ["micros_p1", "one"], ["micros_raw"]),
        n("Max", ["micros_raw", "zero"], ["micros"]),
        n("Mul", ["micros", "micro"], [OUTPUT_COST]),
        n("Gather", [space_in, "knn_cols"], ["knn_raw"], axis=1),
        n("Mul", ["knn_raw", "knn_raw"], ["knn_sq"]),
        n("ReduceSum", ["knn_sq", "axis1"], ["knn_ss"], keepdims=1),
        n("Sqrt", ["knn_ss"], ["knn_norm_raw"]),
        n("Max", ["knn_norm_raw", "eps"], ["knn_norm"]),
        n("Div", ["knn_raw", "knn_norm"], ["knn_q"]),
        *projection_nodes,
        n("Cast", ["knn_ref_t"], ["knn_ref_f32"], to=TensorProto.FLOAT),
        n("MatMul", [knn_query, "knn_ref_f32"], ["knn_sim"]),
        n("TopK", ["knn_sim", "knn_broad_k"], ["broad_top_v", "broad_top_i"], axis=1),
        n("Slice", ["broad_top_i", "zero_i", "knn_k", "axis1"], ["near_top_i"]),
        n("Gather", ["knn_sums", "near_top_i"], ["near_s_g"], axis=0),
        n("Gather", ["knn_counts", "near_top_i"], ["near_c_g"], axis=0),
        n("ReduceSum", ["near_s_g", "axis1"], ["near_s"], keepdims=0),
        n("ReduceSum", ["near_c_g", "axis1"], ["near_c"], keepdims=0),
        n("Add", ["near_s", "knn_prior_w"], ["near_num"]),
        n("Add", ["near_c", "knn_w"], ["near_den"]),
        n("Div", ["near_num", "near_den"], ["near_p"]),
        n("Clip", ["near_p", "clip_lo", "clip_hi"], ["near_pc"]),
        n("Sub", ["one", "near_pc"], ["near_qc"]),
        n("Log", ["near_pc"], ["near_lp"]),
        n("Log", ["near_qc"], ["near_lq"]),
        n("Sub", ["near_lp", "near_lq"], ["near_logit"]),
        n("Gather", ["knn_sums", "broad_top_i"], ["broad_s_g"], axis=0),
        n("Gather", ["knn_counts", "broad_top_i"], ["broad_c_g"], axis=0),
        n("ReduceSum", ["broad_s_g", "axis1"], ["broad_s"], keepdims=0),
        n("ReduceSum", ["broad_c_g", "axis1"], ["broad_c"], keepdims=0),
        n("Add", ["broad_s", "knn_prior_w"], ["broad_num"]),
        n("Add", ["broad_c", "knn_w"], ["broad_den"]),
        n("Div", ["broad_num", "broad_den"], ["broad_p"]),
        n("Clip", ["broad_p", "clip_lo", "clip_hi"], ["broad_pc"]),
        n("Sub", ["one", "broad_pc"], ["broad_qc"]),
        n("Log", ["broad_pc"], ["broad_lp"]),
        n("Log", ["broad_qc"], ["broad_lq"]),
        n("Sub", ["broad_lp", "broad_lq"], ["broad_logit"]),
        n("MatMul", ["scaled", "mlp_w1"], ["mlp_mm1"]),
        n("Add", ["mlp_mm1", "mlp_b1"], ["mlp_pre"]),
        n("Relu", ["mlp_pre"], ["mlp_h"]),
        n("MatMul", ["mlp_h", "mlp_w2"], ["mlp_mm2"]),
        n("Add", ["mlp_mm2", "mlp_b2"], ["mlp_logit"]),
        n("MatMul", [knn_query, "cell_c_t"], ["cell_sim"]),
        n("Sub", ["cell_sim", "cell_half"], ["cell_score_flat"]),
        n("Reshape", ["cell_score_flat", "cell_bag_shape"], ["cell_score"]),
        n("ArgMax", ["cell_score"], ["cell_task"], axis=2, keepdims=0),
        n("MatMul", [knn_query, "cell_lw"], ["cell_lvl_mm"]),
        n("Add", ["cell_lvl_mm", "cell_lb"], ["cell_lvl"]),
        n("Greater", ["cell_lvl", "cell_cuts"], ["cell_above"]),
        n("Cast", ["cell_above"], ["cell_above_i"], to=TensorProto.INT64),
        n("ReduceSum", ["cell_above_i", "axis1"], ["cell_band"], keepdims=1),
        n("Mul", ["cell_task", "cell_levels"], ["cell_base"]),
        n("Add", ["cell_base", "cell_band"], ["cell_class"]),
        n("Add", ["cell_class", "cell_offsets"], ["cell_row"]),
        n("Gather", ["cell_table", "cell_row"], ["cell_p_bags"], axis=0),
        n("ReduceMean", ["cell_p_bags"], ["cell_p"], axes=[1], keepdims=0),
        n("Concat", ["lr_logit", "near_logit", "broad_logit", "mlp_logit"], ["stack_in"], axis=1),
        n("MatMul", ["stack_in", "w_stack"], ["stack_mm"]),
        n("Add", ["stack_mm", "b_stack"], ["stack_logit"]),
        n("Sigmoid", ["stack_logit"], ["stack_p"]),
        n("Mul", ["stack_p", "stack_share"], ["stack_part"]),
        n("Mul", ["cell_p", "cell_share"], ["cell_part"]),
        n("Add", ["stack_part", "cell_part"], [OUTPUT_P]),
    ]
    const("axis1", np.asarray([1], np.int64), np.int64)
    graph = helper.make_graph(
        nodes,
        "ttc_router_predictor",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n_features])],
        [
            helper.make_tensor_value_info(OUTPUT_P, TensorProto.FLOAT, ["N", n_arms]),
            helper.make_tensor_value_info(OUTPUT_LOG_TOKENS, TensorProto.FLOAT, ["N", n_arms]),
            helper.make_tensor_value_info(OUTPUT_COST, TensorProto.FLOAT, ["N", n_arms]),
        ],
        initializer=inits,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="ttc-router",
        doc_string="Per-arm p_success, log output tokens per sample and cost per call.",
    )
    proto.ir_version = 8
    onnx.checker.check_model(proto, full_check=True)
    return proto


def feature_set_info(model: TrainedModel) -> dict[str, Any]:
    """How the input columns are made; the standard set is named, anything else listed."""
    from classifier.long_prompts import METHOD

    if model.feature_names == feats.feature_names():
        return {
            "name": feats.FEATURE_SET_NAME,
            "version": feats.FEATURE_SET_VERSION,
            "embedding_model": feats.EMBEDDING_MODEL_ID,
            "embedding_dim": feats.EMBEDDING_DIM,
            "long_prompts": METHOD,
            "text_features": list(feats.TEXT_FEATURE_NAMES),
            "token_counter": feats.TOKEN_COUNTER,
            "n_features": len(model.feature_names),
        }
    return {
        "name": "custom",
        "version": 0,
        "names": list(model.feature_names),
        "n_features": len(model.feature_names),
    }


def build_metadata(
    model: TrainedModel,
    onnx_bytes: bytes,
    *,
    version_prefix: str = "default",
    created: datetime | None = None,
    training_data: Mapping[str, Any] | None = None,
    score_scale: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """The ``metadata.json`` document for an exported model; ``score_scale`` is the range
    the training scores were mapped from (``classifier.score_scale``), absent for [0, 1]."""
    when = (created or datetime.now(UTC)).astimezone(UTC)
    digest = hashlib.sha256(onnx_bytes).hexdigest()
    arms = model.arms
    return {
        "format": SUPPORTED_FORMAT,
        "version": f"{version_prefix}-{when:%Y%m%d}-{digest[:8]}",
        "created": when.isoformat(timespec="seconds"),
        "onnx_file": MODEL_FILE,
        "onnx_sha256": digest,
        "inputs": {INPUT_NAME: {"dtype": "float32", "shape": ["N", len(model.feature_names)]}},
        "outputs": {
            OUTPUT_P: {
                "dtype": "float32",
                "shape": ["N", len(arms)],
                "meaning": "predicted expected score (probability of success) per arm",
            },
            OUTPUT_LOG_TOKENS: {
                "dtype": "float32",
                "shape": ["N", len(arms)],
                "meaning": "natural log of the expected output tokens per sample per arm",
            },
            OUTPUT_COST: {
                "dtype": "float32",
                "shape": ["N", len(arms)],
                "meaning": "predicted cost in USD of one call of the arm (all samples)",
            },
        },
        "arms": list(arms),
        "samples_per_call": {a: model.per_arm[a].samples for a in arms},
        "tokens_observed": {a: model.per_arm[a].tokens_observed for a in arms},
        "feature_set": feature_set_info(model),
        "tokens_hi_quantile": TOKENS_HI_QUANTILE,
        "tokens_hi_log_offset": {a: model.per_arm[a].tokens_hi_log_offset for a in arms},
        "prices_used": model.prices,
        "training": {
            "seed": model.seed,
            "test_fraction": model.test_fraction,
            "split": "stratified by task and per-arm success (classifier.train.prompt_strata)",
            "refit_on_all": model.refit,
            "logistic_c": {a: model.per_arm[a].c for a in arms},
            "knn_k": model.knn.k,
            "stack_form": model.stack.kind,
            "gap_weight": model.stack.gap.weight,
            "gap_recalibration": {
                a: [model.stack.gap.slope[j], model.stack.gap.intercept[j]]
                for j, a in enumerate(arms)
                if model.stack.gap.slope
            },
            "gap_error_by_weight": {str(w): e for w, e in model.stack.gap.errors.items()},
            "gap_full_information_share": model.stack.gap.full_share,
            "cells_weight": model.cells_weight,
            "cells_error_by_weight": {f"{w:g}": e for w, e in model.cells_errors.items()},
            "token_ridge_alpha": {a: model.per_arm[a].alpha for a in arms},
            "cost_ridge_alpha": {a: model.per_arm[a].cost_alpha for a in arms},
            "counts": model.counts,
        },
        "training_data": dict(training_data or {}),
        "metrics": model.metrics,
    } | ({"score_scale": dict(score_scale)} if score_scale else {})


def save_model(
    model: TrainedModel,
    out_dir: Path,
    *,
    version_prefix: str = "default",
    created: datetime | None = None,
    training_data: Mapping[str, Any] | None = None,
    score_scale: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Write ``model.onnx`` and ``metadata.json`` into ``out_dir``; returns the metadata."""
    data = to_onnx(model).SerializeToString()
    meta = build_metadata(
        model,
        data,
        version_prefix=version_prefix,
        created=created,
        training_data=training_data,
        score_scale=score_scale,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / (MODEL_FILE + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out_dir / MODEL_FILE)
    tmp_meta = out_dir / (METADATA_FILE + ".tmp")
    tmp_meta.write_text(json.dumps(meta, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    tmp_meta.replace(out_dir / METADATA_FILE)
    return meta


__all__ = [
    "INPUT_NAME",
    "METADATA_FILE",
    "MODEL_FILE",
    "OUTPUT_COST",
    "OUTPUT_LOG_TOKENS",
    "OUTPUT_P",
    "build_metadata",
    "feature_set_info",
    "save_model",
    "to_onnx",
]
