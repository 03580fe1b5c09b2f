"""The shipped predictor: loads, validates, and predicts sensibly through the real embedder."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from classifier.embedder.runtime import OnnxEmbedder
from classifier.predictor import OnnxPredictor, default_model_dir
from router.core.protocols import Predictor
from router.errors import InvalidRequest, ModelError

pytestmark = pytest.mark.integration

MODEL_DIR = default_model_dir()
ARMS = ("local-7b/greedy", "mid-32b/greedy", "premium/greedy")

# Fresh prompts in the style of the training benchmarks (not taken from them).
NEW_PROMPTS = [
    "A baker makes 14 trays of cookies with 12 cookies on each tray. She sells 97 cookies and "
    "gives 25 to her neighbours. How many cookies does she have left?",
    "Tom reads 23 pages on Monday and twice as many on Tuesday. His book has 150 pages. How "
    "many pages are left to read?",
    r"Let $f(x) = x^3 - 6x^2 + 11x - 6$. Find the sum of the squares of the roots of $f$.",
    r"How many ordered pairs of positive integers $(a, b)$ satisfy $\frac{1}{a} + \frac{1}{b} "
    r"= \frac{1}{12}$?",
    "You are given a Python function and an assertion containing an input to the function. "
    "Complete the assertion with a literal containing the output when executing the provided "
    "code on the given input.\n\n[PYTHON]\ndef f(s):\n    out = ''\n    for i, c in enumerate(s):"
    "\n        if i % 2:\n            out += c.upper()\n        else:\n            out = c + out\n"
    "    return out\nassert f('routing') == ??\n[/PYTHON]",
]


@pytest.fixture(scope="module")
def predictor() -> OnnxPredictor:
    return OnnxPredictor.load(MODEL_DIR)


@pytest.fixture(scope="module")
def embedder() -> OnnxEmbedder:
    return OnnxEmbedder.load()


def _embed(embedder: OnnxEmbedder, texts: list[str]) -> NDArray[np.float32]:
    return np.asarray(embedder.embed_batch(texts), dtype=np.float32)


def test_loads_with_matching_version(predictor: OnnxPredictor) -> None:
    meta = json.loads((MODEL_DIR / "metadata.json").read_text())
    assert predictor.version == meta["version"]
    digest = hashlib.sha256((MODEL_DIR / "model.onnx").read_bytes()).hexdigest()
    assert meta["version"].startswith("default-") and meta["version"].endswith(digest[:8])
    assert tuple(predictor.arms) == ARMS
    assert isinstance(predictor, Predictor)
    as_protocol: Predictor = predictor  # checked statically by mypy
    assert as_protocol.version == predictor.version
    assert (MODEL_DIR / "model.onnx").stat().st_size < 5 * 1024 * 1024
    card = (MODEL_DIR / "MODEL_CARD.md").read_text()
    assert meta["version"] in card and "Apache" in card and "ZeroEval" in card


def test_predicts_every_arm_in_range(predictor: OnnxPredictor, embedder: OnnxEmbedder) -> None:
    emb = _embed(embedder, NEW_PROMPTS)
    batch = predictor.predict_batch(emb, NEW_PROMPTS)
    assert len(batch) == len(NEW_PROMPTS)
    for i, pred in enumerate(batch):
        assert pred.model_version == predictor.version
        assert tuple(pred.arms) == ARMS
        for ap in pred.arms.values():
            assert 0.0 <= ap.p_success <= 1.0
            assert 1.0 <= ap.output_tokens <= ap.output_tokens_hi
        single = predictor.predict(emb[i], NEW_PROMPTS[i])
        for a in ARMS:
            assert single.arms[a].p_success == pytest.approx(pred.arms[a].p_success, abs=1e-6)
            assert single.arms[a].output_tokens == pytest.approx(
                pred.arms[a].output_tokens, rel=1e-5
            )
    mean_p = {a: float(np.mean([p.arms[a].p_success for p in batch])) for a in ARMS}
    assert mean_p["premium/greedy"] > mean_p["local-7b/greedy"]


def test_more_threads_give_the_same_predictions(
    predictor: OnnxPredictor, embedder: OnnxEmbedder
) -> None:
    """``TTC_PREDICTOR_THREADS`` reaches ONNX Runtime and changes speed, not answers."""
    two = OnnxPredictor.load(MODEL_DIR, intra_op_threads=2)
    assert two._session.get_session_options().intra_op_num_threads == 2
    assert predictor._session.get_session_options().intra_op_num_threads == 1
    emb = _embed(embedder, NEW_PROMPTS)
    for got, want in zip(
        two.predict_batch(emb, NEW_PROMPTS), predictor.predict_batch(emb, NEW_PROMPTS), strict=True
    ):
        for a in ARMS:
            assert got.arms[a].p_success == pytest.approx(want.arms[a].p_success, abs=1e-6)
            assert got.arms[a].output_tokens == pytest.approx(want.arms[a].output_tokens, rel=1e-6)


def test_held_out_prompts_rank_like_the_outcomes(
    predictor: OnnxPredictor, embedder: OnnxEmbedder
) -> None:
    """On prompts the shipped model never saw, every arm ranks successes above failures
    (AUC), beats a constant at the held-out base rate in Brier score, and the premium arm
    is expected to do better than the 7B arm."""
    from classifier.importers import zeroeval as ze
    from classifier.train import prompt_strata, split_prompts

    meta = predictor.metadata
    records = [r for r in ze.import_zeroeval(count_tokens=lambda t: [1] * len(t)) if r.arm in ARMS]
    ids = sorted({r.prompt_id for r in records})
    split = split_prompts(
        ids, meta["training"]["seed"], meta["training"]["test_fraction"], prompt_strata(records)
    )
    assert len(split) == meta["training"]["counts"]["test_prompts"]
    held = sorted(split)[::4]  # a quarter of them keeps the test quick
    text = {r.prompt_id: r.prompt for r in records}
    score = {(r.prompt_id, r.arm): r.score for r in records}
    prompts = [text[i] for i in held]
    preds = predictor.predict_batch(_embed(embedder, prompts), prompts)
    mean_p = {}
    for arm in ARMS:
        p = np.asarray([x.arms[arm].p_success for x in preds])
        y = np.asarray([score[(i, arm)] for i in held])
        pos, neg = p[y == 1], p[y == 0]
        auc = float(np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])))
        assert auc > 0.6, (arm, auc)
        assert np.mean((p - y) ** 2) < np.mean((y.mean() - y) ** 2) + 0.005, arm
        mean_p[arm] = float(p.mean())
    assert mean_p["premium/greedy"] > mean_p["local-7b/greedy"]


def test_token_counts_agree_with_the_embedder(
    predictor: OnnxPredictor, embedder: OnnxEmbedder
) -> None:
    """The feature's token counter and the embedder's ``count_tokens`` are the same count,
    so a caller may pass the embedder's count as ``n_tokens``."""
    from classifier.features import default_token_counter

    texts = [*NEW_PROMPTS, "", "naïve café 中文 🚀", "word " * 600]
    assert [embedder.count_tokens(t) for t in texts] == default_token_counter().count_batch(texts)
    emb = _embed(embedder, texts[:3])
    a = predictor.predict_batch(emb, texts[:3])
    b = predictor.predict_batch(
        emb, texts[:3], n_tokens=[embedder.count_tokens(t) for t in texts[:3]]
    )
    assert a == b
    c = predictor.predict(emb[0], texts[0], n_tokens=10_000)
    assert c.arms["premium/greedy"] != a[0].arms["premium/greedy"]


def test_single_prompt_latency(predictor: OnnxPredictor) -> None:
    emb = np.random.default_rng(0).normal(size=384).astype(np.float32)
    emb /= np.linalg.norm(emb)
    prompt = NEW_PROMPTS[0]
    for _ in range(50):
        predictor.predict(emb, prompt)
    times = []
    for _ in range(300):
        t0 = time.perf_counter()
        predictor.predict(emb, prompt)
        times.append(time.perf_counter() - t0)
    assert float(np.median(times)) < 1e-3  # about 0.1 ms here; generous for loaded CI hosts


def test_rejects_wrong_embedding_shape(predictor: OnnxPredictor) -> None:
    with pytest.raises(InvalidRequest):
        predictor.predict(np.zeros(10, np.float32), "hi")
    with pytest.raises(InvalidRequest):
        predictor.predict_batch(np.zeros((2, 384), np.float32), ["only one"])


@pytest.fixture
def model_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "model"
    shutil.copytree(MODEL_DIR, dst)
    return dst


def test_missing_directory_or_files(tmp_path: Path, model_copy: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        OnnxPredictor.load(tmp_path / "nowhere")
    with pytest.raises(ModelError, match="is a file, not a model directory"):
        OnnxPredictor.load(model_copy / "metadata.json")
    (model_copy / "model.onnx").unlink()
    with pytest.raises(ModelError, match=r"model\.onnx is missing"):
        OnnxPredictor.load(model_copy)
    (model_copy / "metadata.json").unlink()
    with pytest.raises(ModelError, match=r"metadata\.json is missing"):
        OnnxPredictor.load(model_copy)


def test_corrupt_model_file(model_copy: Path) -> None:
    path = model_copy / "model.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelError, match="different builds"):
        OnnxPredictor.load(model_copy)
    meta = json.loads((model_copy / "metadata.json").read_text())
    meta["onnx_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (model_copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        OnnxPredictor.load(model_copy)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(feature_set={**m["feature_set"], "version": 999}), "feature set"),
        (lambda m: m.update(arms=m["arms"][:2]), "tokens_hi_log_offset"),
        (lambda m: m.update(arms=["not-an-arm"]), "not of the form"),
        (lambda m: m.pop("version"), "'version'"),
        (lambda m: m.update(format=99), "format"),
    ],
)
def test_broken_metadata(
    model_copy: Path, change: Callable[[dict[str, Any]], object], message: str
) -> None:
    meta = json.loads((model_copy / "metadata.json").read_text())
    change(meta)
    (model_copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=message):
        OnnxPredictor.load(model_copy)


def test_metadata_not_json(model_copy: Path) -> None:
    (model_copy / "metadata.json").write_text("{ nope")
    with pytest.raises(ModelError, match="cannot be read"):
        OnnxPredictor.load(model_copy)


def test_arm_count_mismatch_with_graph(model_copy: Path) -> None:
    meta = json.loads((model_copy / "metadata.json").read_text())
    meta["arms"] = [*meta["arms"], "extra/greedy"]
    meta["tokens_hi_log_offset"]["extra/greedy"] = 0.5
    (model_copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="p_success"):
        OnnxPredictor.load(model_copy)


def test_another_long_prompt_method_loads_with_a_warning(
    model_copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from classifier.long_prompts import METHOD

    assert (
        json.loads((model_copy / "metadata.json").read_text())["feature_set"]["long_prompts"]
        == METHOD
    ), "the shipped model is built with this release's long-prompt embedding"
    with caplog.at_level("WARNING", logger="classifier.predictor"):
        OnnxPredictor.load(model_copy)
    assert not caplog.records
    meta = json.loads((model_copy / "metadata.json").read_text())
    meta["feature_set"]["long_prompts"] = "prompts over 10 tokens: embed(first 10 tokens)"
    (model_copy / "metadata.json").write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="classifier.predictor"):
        predictor = OnnxPredictor.load(model_copy)
    assert predictor.arms
    assert any("retrain it to match" in r.getMessage() for r in caplog.records)
