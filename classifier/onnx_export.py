"""Export a :class:`~classifier.train.TrainedModel` as one ONNX graph plus ``metadata.json``.

Graph (each piece converted by skl2onnx, then joined here)::

    features [N, F] ─► Scaler ─┬─► LinearClassifier per arm ─► P(class 1) ─► Concat ─► p_success
                               └─► LinearRegressor per arm  ─────────────► Concat ─► log_tokens

Both outputs are float32 [N, A].

``log_tokens`` is the natural log of the expected output tokens per sample; the high
estimate is ``exp(log_tokens + tokens_hi_log_offset[arm])`` (metadata). Columns follow
``metadata["arms"]``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from classifier import features as feats
from classifier.predictor import (
    INPUT_NAME,
    METADATA_FILE,
    MODEL_FILE,
    OUTPUT_LOG_TOKENS,
    OUTPUT_P,
    SUPPORTED_FORMAT,
)
from classifier.train import TOKENS_HI_QUANTILE, TrainedModel

OPSET = 17
ML_OPSET = 1


def _convert(estimator: Any, n_features: int, zipmap: bool | None = None) -> Any:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(estimator): {"zipmap": False}} if zipmap is False else None
    return convert_sklearn(
        estimator,
        initial_types=[("x", FloatTensorType([None, n_features]))],
        options=options,
        target_opset={"": OPSET, "ai.onnx.ml": ML_OPSET},
    )


def _splice(sub: Any, prefix: str, input_name: str) -> tuple[list[Any], list[Any], dict[str, str]]:
    """Nodes and initializers of ``sub`` with names prefixed and its input wired to
    ``input_name``; returns them with a map from the original output names."""
    from onnx import compose

    renamed = compose.add_prefix(sub, prefix)
    old_input = renamed.graph.input[0].name
    nodes = []
    for node in renamed.graph.node:
        for i, name in enumerate(node.input):
            if name == old_input:
                node.input[i] = input_name
        nodes.append(node)
    outputs = {o.name.removeprefix(prefix): o.name for o in renamed.graph.output}
    return nodes, list(renamed.graph.initializer), outputs


def to_onnx(model: TrainedModel) -> Any:
    """One ``onnx.ModelProto`` computing every arm's p_success and log tokens."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n_features = len(model.feature_names)
    n_arms = len(model.arms)
    nodes: list[Any] = []
    inits: list[Any] = []

    s_nodes, s_inits, s_out = _splice(_convert(model.scaler, n_features), "scaler_", INPUT_NAME)
    nodes += s_nodes
    inits += s_inits
    scaled = s_out["variable"]

    inits += [
        numpy_helper.from_array(np.asarray([1], np.int64), "col1_start"),
        numpy_helper.from_array(np.asarray([2], np.int64), "col1_end"),
        numpy_helper.from_array(np.asarray([1], np.int64), "col_axis"),
    ]
    p_cols: list[str] = []
    t_cols: list[str] = []
    for j, arm in enumerate(model.arms):
        am = model.per_arm[arm]
        c_nodes, c_inits, c_out = _splice(
            _convert(am.classifier, n_features, zipmap=False), f"arm{j}_clf_", scaled
        )
        r_nodes, r_inits, r_out = _splice(
            _convert(am.regressor, n_features), f"arm{j}_reg_", scaled
        )
        nodes += c_nodes + r_nodes
        inits += c_inits + r_inits
        p_col = f"arm{j}_p"
        nodes.append(
            helper.make_node(
                "Slice",
                [c_out["probabilities"], "col1_start", "col1_end", "col_axis"],
                [p_col],
                name=f"arm{j}_take_p1",
            )
        )
        p_cols.append(p_col)
        t_col = f"arm{j}_log_tokens"
        nodes.append(
            helper.make_node(
                "Reshape", [r_out["variable"], "col_shape"], [t_col], name=f"arm{j}_col"
            )
        )
        t_cols.append(t_col)
    inits.append(numpy_helper.from_array(np.asarray([-1, 1], np.int64), "col_shape"))
    nodes.append(helper.make_node("Concat", p_cols, [OUTPUT_P], axis=1, name="concat_p"))
    nodes.append(helper.make_node("Concat", t_cols, [OUTPUT_LOG_TOKENS], axis=1, name="concat_t"))

    graph = helper.make_graph(
        nodes,
        "ttc_router_predictor",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n_features])],
        [
            helper.make_tensor_value_info(OUTPUT_P, TensorProto.FLOAT, ["N", n_arms]),
            helper.make_tensor_value_info(OUTPUT_LOG_TOKENS, TensorProto.FLOAT, ["N", n_arms]),
        ],
        initializer=inits,
    )
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("ai.onnx.ml", ML_OPSET)],
        producer_name="ttc-router",
        doc_string="Per-arm p_success and log output tokens per sample (metadata arm order).",
    )
    proto.ir_version = 8
    onnx.checker.check_model(proto, full_check=True)
    return proto


def feature_set_info(model: TrainedModel) -> dict[str, Any]:
    """How the input columns are made; the standard set is named, anything else listed."""
    if model.feature_names == feats.feature_names():
        return {
            "name": feats.FEATURE_SET_NAME,
            "version": feats.FEATURE_SET_VERSION,
            "embedding_model": feats.EMBEDDING_MODEL_ID,
            "embedding_dim": feats.EMBEDDING_DIM,
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
) -> dict[str, Any]:
    """The ``metadata.json`` document for an exported model."""
    when = (created or datetime.now(UTC)).astimezone(UTC)
    digest = hashlib.sha256(onnx_bytes).hexdigest()
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
                "shape": ["N", len(model.arms)],
                "meaning": "predicted expected score (probability of success) per arm",
            },
            OUTPUT_LOG_TOKENS: {
                "dtype": "float32",
                "shape": ["N", len(model.arms)],
                "meaning": "natural log of the expected output tokens per sample per arm",
            },
        },
        "arms": list(model.arms),
        "samples_per_call": {a: model.per_arm[a].samples for a in model.arms},
        "feature_set": feature_set_info(model),
        "tokens_hi_quantile": TOKENS_HI_QUANTILE,
        "tokens_hi_log_offset": {a: model.per_arm[a].tokens_hi_log_offset for a in model.arms},
        "prices_used": model.prices,
        "training": {
            "seed": model.seed,
            "test_fraction": model.test_fraction,
            "logistic_c": {a: model.per_arm[a].c for a in model.arms},
            "ridge_alpha": {a: model.per_arm[a].alpha for a in model.arms},
            "counts": model.counts,
        },
        "training_data": dict(training_data or {}),
        "metrics": model.metrics,
    }


def save_model(
    model: TrainedModel,
    out_dir: Path,
    *,
    version_prefix: str = "default",
    created: datetime | None = None,
    training_data: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``model.onnx`` and ``metadata.json`` into ``out_dir``; returns the metadata."""
    data = to_onnx(model).SerializeToString()
    meta = build_metadata(
        model, data, version_prefix=version_prefix, created=created, training_data=training_data
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
    "OUTPUT_LOG_TOKENS",
    "OUTPUT_P",
    "build_metadata",
    "feature_set_info",
    "save_model",
    "to_onnx",
]
