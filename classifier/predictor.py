"""ONNX Runtime predictor: per-arm p_success and output tokens from an embedding and a prompt.

Implements ``router.core.protocols.Predictor``. A model directory holds ``model.onnx`` and
``metadata.json`` as written by ``classifier.onnx_export``; :meth:`OnnxPredictor.load`
checks both (digest, arms, feature set, graph signature) and raises ``ModelError``
with the reason when anything is off.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classifier import features as feats
from router.core.types import Arm, ArmPrediction, Prediction
from router.errors import InvalidRequest, ModelError

MODEL_FILE = "model.onnx"
METADATA_FILE = "metadata.json"
INPUT_NAME = "features"
OUTPUT_P = "p_success"
OUTPUT_LOG_TOKENS = "log_tokens"
OUTPUT_COST = "cost_usd"
SUPPORTED_FORMAT = 2
_MAX_LOG_TOKENS = 20.0


def default_model_dir() -> Path:
    """The model shipped with the package: ``classifier/models/default``."""
    return Path(__file__).resolve().parent / "models" / "default"


def _fail(model_dir: Path, why: str) -> ModelError:
    return ModelError(f"predictor model at {model_dir}: {why}")


def _read_metadata(model_dir: Path) -> dict[str, Any]:
    path = model_dir / METADATA_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(model_dir, f"{METADATA_FILE} is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(model_dir, f"{METADATA_FILE} cannot be read: {exc}") from None
    if not isinstance(meta, dict):
        raise _fail(model_dir, f"{METADATA_FILE} must hold a JSON object")
    return meta


def _check_metadata(model_dir: Path, meta: Mapping[str, Any]) -> None:
    if meta.get("format") != SUPPORTED_FORMAT:
        raise _fail(model_dir, f"metadata format {meta.get('format')!r} is not {SUPPORTED_FORMAT}")
    version = meta.get("version")
    if not isinstance(version, str) or not version:
        raise _fail(model_dir, "metadata has no 'version' string")
    arms = meta.get("arms")
    if not isinstance(arms, list) or not arms or not all(isinstance(a, str) for a in arms):
        raise _fail(model_dir, "metadata 'arms' must be a non-empty list of arm names")
    if len(set(arms)) != len(arms):
        raise _fail(model_dir, "metadata 'arms' repeats an arm")
    for a in arms:
        try:
            Arm.parse(a)
        except InvalidRequest as exc:
            raise _fail(model_dir, exc.message) from None
    offsets = meta.get("tokens_hi_log_offset")
    if not isinstance(offsets, dict) or set(offsets) != set(arms):
        raise _fail(model_dir, "metadata 'tokens_hi_log_offset' must give one number per arm")
    for a, v in offsets.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
            raise _fail(model_dir, f"tokens_hi_log_offset for {a!r} must be a number >= 0")
    fs = meta.get("feature_set")
    if not isinstance(fs, dict):
        raise _fail(model_dir, "metadata has no 'feature_set'")
    expected = {
        "name": feats.FEATURE_SET_NAME,
        "version": feats.FEATURE_SET_VERSION,
        "embedding_model": feats.EMBEDDING_MODEL_ID,
        "embedding_dim": feats.EMBEDDING_DIM,
        "text_features": list(feats.TEXT_FEATURE_NAMES),
    }
    for key, want in expected.items():
        if fs.get(key) != want:
            raise _fail(
                model_dir,
                f"model was trained on feature set {key}={fs.get(key)!r}, this code computes "
                f"{want!r}; retrain the model or use a matching release",
            )


def _warn_if_long_prompts_differ(model_dir: Path, theirs: Any) -> None:
    """A model whose long prompts were embedded another way still serves (prompts within
    the window, most traffic, see the same features), but prompts over the window get
    vectors it was not trained on: say so once, at load."""
    from classifier.long_prompts import METHOD

    if theirs is not None and theirs != METHOD:
        logging.getLogger(__name__).warning(
            "model %s was trained with long prompts embedded as %r; this release embeds them "
            "as %r, so prompts over the window get features the model was not trained on; "
            "retrain it to match",
            model_dir,
            theirs,
            METHOD,
        )


@dataclass(frozen=True)
class PredictionTable:
    """Predictions of many prompts: p_success, output tokens per sample (expected and
    high estimate) and cost per call in USD, each (N, A)."""

    p_success: NDArray[np.float64]
    tokens: NDArray[np.float64]
    tokens_hi: NDArray[np.float64]
    cost_usd: NDArray[np.float64]


class OnnxPredictor:
    """A loaded predictor model. Thread-safe: ONNX Runtime sessions allow concurrent runs."""

    def __init__(
        self,
        session: Any,
        metadata: Mapping[str, Any],
        model_dir: Path,
        counter: feats.TokenCounter | None = None,
    ) -> None:
        self._session = session
        self._meta = dict(metadata)
        self._dir = model_dir
        self._arms: tuple[str, ...] = tuple(metadata["arms"])
        self._offsets = tuple(float(metadata["tokens_hi_log_offset"][a]) for a in self._arms)
        self._counter = counter or feats.default_token_counter()
        self._dim = feats.EMBEDDING_DIM

    @classmethod
    def load(cls, model_dir: Path, *, intra_op_threads: int = 1) -> OnnxPredictor:
        """Load and validate ``model.onnx`` + ``metadata.json`` from ``model_dir``."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise _fail(
                model_dir,
                "is a file, not a model directory"
                if model_dir.exists()
                else "directory does not exist",
            )
        meta = _read_metadata(model_dir)
        _check_metadata(model_dir, meta)
        _warn_if_long_prompts_differ(model_dir, meta["feature_set"].get("long_prompts"))
        try:
            data = (model_dir / MODEL_FILE).read_bytes()
        except FileNotFoundError:
            raise _fail(model_dir, f"{MODEL_FILE} is missing") from None
        except OSError as exc:
            raise _fail(model_dir, f"{MODEL_FILE} cannot be read: {exc}") from None
        digest = hashlib.sha256(data).hexdigest()
        if meta.get("onnx_sha256") != digest:
            raise _fail(
                model_dir,
                f"{MODEL_FILE} does not match metadata (sha256 {digest[:12]}…, metadata says "
                f"{str(meta.get('onnx_sha256'))[:12]}…); the files come from different builds",
            )
        session = _session(model_dir, data, intra_op_threads)
        _check_signature(model_dir, session, len(feats.feature_names()), len(meta["arms"]))
        return cls(session, meta, model_dir)

    @property
    def version(self) -> str:
        return str(self._meta["version"])

    @property
    def arms(self) -> Sequence[str]:
        return self._arms

    @property
    def metadata(self) -> Mapping[str, Any]:
        return self._meta

    @property
    def model_dir(self) -> Path:
        return self._dir

    def predict(
        self, embedding: NDArray[np.float32], prompt: str, *, n_tokens: int | None = None
    ) -> Prediction:
        """Per-arm prediction for one prompt; ``embedding`` is its (dim,) vector.

        ``n_tokens`` may carry the prompt's untruncated WordPiece count without special
        tokens (``OnnxEmbedder.count_tokens``) when the caller has it; else it is counted here.
        """
        emb = np.asarray(embedding, dtype=np.float32).reshape(1, -1)
        self._check_dim(emb)
        count = self._counter.count(prompt) if n_tokens is None else n_tokens
        x = feats.assemble(emb, feats.text_features(prompt, count))
        p, log_t = self._run(x)
        return self._prediction(p[0], log_t[0])

    def predict_batch(
        self,
        embeddings: NDArray[np.float32],
        prompts: Sequence[str],
        *,
        n_tokens: Sequence[int] | None = None,
    ) -> list[Prediction]:
        """Predictions for many prompts; ``embeddings`` is (N, dim), row i for prompts[i]."""
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(prompts):
            raise InvalidRequest(
                f"embeddings of shape {emb.shape} do not match {len(prompts)} prompts"
            )
        if n_tokens is not None and len(n_tokens) != len(prompts):
            raise InvalidRequest(f"{len(n_tokens)} token counts for {len(prompts)} prompts")
        if not prompts:
            return []
        self._check_dim(emb)
        counts = list(n_tokens) if n_tokens is not None else self._counter.count_batch(prompts)
        x = feats.assemble(emb, feats.text_features_batch(prompts, counts))
        p, log_t = self._run(x)
        return [self._prediction(p[i], log_t[i]) for i in range(len(prompts))]

    def predict_table(
        self,
        embeddings: NDArray[np.float32],
        prompts: Sequence[str],
        *,
        n_tokens: Sequence[int] | None = None,
    ) -> PredictionTable:
        """All outputs for many prompts as arrays (N, A), columns in :attr:`arms` order."""
        emb = np.asarray(embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != len(prompts):
            raise InvalidRequest(
                f"embeddings of shape {emb.shape} do not match {len(prompts)} prompts"
            )
        n_arms = len(self._arms)
        if not prompts:
            empty = np.zeros((0, n_arms))
            return PredictionTable(empty, empty, empty, empty)
        self._check_dim(emb)
        counts = list(n_tokens) if n_tokens is not None else self._counter.count_batch(prompts)
        x = feats.assemble(emb, feats.text_features_batch(prompts, counts))
        try:
            p, log_t, cost = self._session.run(
                [OUTPUT_P, OUTPUT_LOG_TOKENS, OUTPUT_COST], {INPUT_NAME: x}
            )
        except Exception as exc:
            raise ModelError(f"predictor model {self.version} failed to run: {exc}") from exc
        p64 = np.clip(np.nan_to_num(np.asarray(p, np.float64), nan=0.0), 0.0, 1.0)
        lt = np.minimum(np.nan_to_num(np.asarray(log_t, np.float64), nan=0.0), _MAX_LOG_TOKENS)
        off = np.asarray(self._offsets, np.float64)
        tokens = np.maximum(np.exp(lt), 1.0)
        hi = np.maximum(np.exp(np.minimum(lt + off, _MAX_LOG_TOKENS)), tokens)
        c = np.maximum(np.nan_to_num(np.asarray(cost, np.float64), nan=0.0), 0.0)
        return PredictionTable(p64, tokens, hi, c)

    def _check_dim(self, emb: NDArray[np.float32]) -> None:
        if emb.shape[1] != self._dim:
            raise InvalidRequest(
                f"embedding has {emb.shape[1]} values, the model needs {self._dim}"
            )

    def _run(self, x: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        try:
            p, log_t = self._session.run([OUTPUT_P, OUTPUT_LOG_TOKENS], {INPUT_NAME: x})
        except Exception as exc:
            raise ModelError(f"predictor model {self.version} failed to run: {exc}") from exc
        return p, log_t

    def _prediction(self, p: NDArray[np.float32], log_t: NDArray[np.float32]) -> Prediction:
        arms: dict[str, ArmPrediction] = {}
        for a, pj, lj, off in zip(
            self._arms, p.tolist(), log_t.tolist(), self._offsets, strict=True
        ):
            prob = 0.0 if math.isnan(pj) else min(max(pj, 0.0), 1.0)
            lt = 0.0 if math.isnan(lj) else min(lj, _MAX_LOG_TOKENS)
            tokens = max(math.exp(lt), 1.0)
            hi = max(math.exp(min(lt + off, _MAX_LOG_TOKENS)), tokens)
            arms[a] = ArmPrediction(prob, tokens, hi)
        return Prediction(model_version=self.version, arms=arms)


def _session(model_dir: Path, data: bytes, intra_op_threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = intra_op_threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise _fail(model_dir, f"{MODEL_FILE} is not a loadable ONNX model: {exc}") from exc


def _check_signature(model_dir: Path, session: Any, n_features: int, n_arms: int) -> None:
    inputs = {i.name: i.shape for i in session.get_inputs()}
    outputs = {o.name: o.shape for o in session.get_outputs()}
    if list(inputs) != [INPUT_NAME] or inputs[INPUT_NAME][-1] != n_features:
        raise _fail(
            model_dir, f"graph input must be '{INPUT_NAME}' [N, {n_features}], got {inputs}"
        )
    for name in (OUTPUT_P, OUTPUT_LOG_TOKENS, OUTPUT_COST):
        if name not in outputs or outputs[name][-1] != n_arms:
            raise _fail(model_dir, f"graph output '{name}' must be [N, {n_arms}], got {outputs}")


__all__ = ["OnnxPredictor", "PredictionTable", "default_model_dir"]
