"""Training on synthetic features, ONNX export, and agreement of ONNX Runtime with scikit-learn."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from classifier.cells import CELL_WEIGHTS
from classifier.gap_blend import GAP_WEIGHTS, GapChoice
from classifier.onnx_export import OUTPUT_COST, OUTPUT_LOG_TOKENS, OUTPUT_P, save_model, to_onnx
from classifier.outcomes_io import OutcomeRecord
from classifier.train import TrainedModel, samples_per_call, split_prompts, train
from router.errors import InvalidRequest

N_PROMPTS = 240
N_FEATURES = 12
ARMS = ["cheap/greedy", "big/greedy", "cheap/vote@3"]


def _synthetic(seed: int = 7) -> tuple[list[OutcomeRecord], dict[str, NDArray[np.float32]]]:
    """Prompts with random features; success and length depend on the first features."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N_PROMPTS, N_FEATURES)).astype(np.float32)
    records: list[OutcomeRecord] = []
    for i in range(N_PROMPTS):
        for j, arm in enumerate(ARMS):
            logit = 1.5 * x[i, 0] + (1.0 if arm.startswith("big") else -0.3) + 0.2 * j
            score = float(rng.random() < 1 / (1 + np.exp(-logit)))
            if arm == "cheap/vote@3":
                score = round(float(rng.random()), 2)  # a graded score
            tokens = int(np.exp(4.0 + 0.5 * x[i, 1] + 0.2 * rng.normal())) * samples_per_call(arm)
            records.append(
                OutcomeRecord(
                    prompt_id=f"p{i}",
                    prompt=f"prompt {i}",
                    arm=arm,
                    score=score,
                    cost_usd=(10 + j * 50) * 1e-6 * samples_per_call(arm),
                    input_tokens=20 * samples_per_call(arm),
                    output_tokens=tokens,
                )
            )
    return records, {f"prompt {i}": x[i] for i in range(N_PROMPTS)}


def _featurizer(
    by_text: dict[str, NDArray[np.float32]],
) -> Callable[[Sequence[str]], NDArray[np.float32]]:
    def featurize(texts: Sequence[str]) -> NDArray[np.float32]:
        return np.stack([by_text[t] for t in texts])

    return featurize


@pytest.fixture(scope="module")
def trained() -> tuple[TrainedModel, dict[str, NDArray[np.float32]]]:
    records, by_text = _synthetic()
    model = train(records, seed=3, arms=ARMS, featurize=_featurizer(by_text))
    return model, by_text


def test_onnx_matches_sklearn(trained: tuple[TrainedModel, dict[str, NDArray[np.float32]]]) -> None:
    import onnxruntime as ort

    model, _ = trained
    x = np.random.default_rng(11).normal(size=(64, N_FEATURES)).astype(np.float32)
    p_ref, t_ref, c_ref = model.predict_all(x)
    sess = ort.InferenceSession(
        to_onnx(model).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    p_onnx, t_onnx, c_onnx = sess.run([OUTPUT_P, OUTPUT_LOG_TOKENS, OUTPUT_COST], {"features": x})
    assert p_onnx.shape == (64, len(ARMS)) and p_onnx.dtype == np.float32
    assert t_onnx.shape == (64, len(ARMS)) and t_onnx.dtype == np.float32
    np.testing.assert_allclose(p_onnx, p_ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(t_onnx, t_ref, atol=1e-5, rtol=0)
    np.testing.assert_allclose(c_onnx, c_ref, rtol=1e-5, atol=1e-12)
    # Every learner reaches the output: the stack's inputs change when x does.
    base = model.base_logits(x)
    assert base.shape == (64, 4 * len(ARMS)) and np.isfinite(base).all()
    # Columns are in arm order and the arms really differ.
    assert not np.allclose(p_onnx[:, 0], p_onnx[:, 1], atol=1e-3)


def test_onnx_matches_sklearn_with_the_cells_mixed_in(
    trained: tuple[TrainedModel, dict[str, NDArray[np.float32]]],
) -> None:
    """The task × difficulty cells' path of the graph (k-means task, difficulty band, table
    lookup) equals the Python one, whatever weight cross-validation gave it."""
    import dataclasses

    import onnxruntime as ort

    model, _ = trained
    mixed = dataclasses.replace(model, cells_weight=0.5)
    x = np.random.default_rng(12).normal(size=(256, N_FEATURES)).astype(np.float32)
    p_ref, _, _ = mixed.predict_all(x)
    p_stack, _, _ = dataclasses.replace(model, cells_weight=0.0).predict_all(x)
    assert not np.allclose(p_ref, p_stack, atol=1e-3)  # the cells do move the output
    sess = ort.InferenceSession(
        to_onnx(mixed).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (p_onnx,) = sess.run([OUTPUT_P], {"features": x})
    np.testing.assert_allclose(p_onnx, p_ref, atol=1e-5, rtol=0)
    # More than three cells of every partition are reached, so the lookup is exercised.
    q = mixed.knn.query(mixed.knn_input(x, mixed.scaler.transform(x)))
    classes = mixed.cells.classes(q)
    bags = classes.shape[1]
    assert bags > 1
    assert all(len(np.unique(classes[:, b])) > 3 for b in range(bags))
    # The partitions disagree on some rows, so a graph reading one partition would fail.
    per_bag = [mixed.cells.table[b, classes[:, b]] for b in range(bags)]
    assert not all(np.allclose(per_bag[b], per_bag[0]) for b in range(bags))


def test_models_learn_the_signal(
    trained: tuple[TrainedModel, dict[str, NDArray[np.float32]]],
) -> None:
    model, _ = trained
    x = np.zeros((2, N_FEATURES), np.float32)
    x[0, 0], x[1, 0] = -2.0, 2.0
    x[0, 1], x[1, 1] = -2.0, 2.0
    p, t = model.predict_arrays(x)
    assert p[1, 0] > p[0, 0] + 0.2  # success rises with feature 0
    assert t[1, 0] > t[0, 0] + 0.5  # length rises with feature 1
    # vote@3 tokens are per sample: about the same scale as the greedy arms.
    assert abs(float(t[:, 2].mean()) - float(t[:, 0].mean())) < 0.5
    per_arm = model.metrics["per_arm"]
    assert set(per_arm) == set(ARMS)
    assert 0.0 <= per_arm["big/greedy"]["ece"] <= 1.0
    assert per_arm["big/greedy"]["tokens_within_2x"] > 0.8
    routing = model.metrics["routing"]
    assert routing["cheap_arm"] == "cheap/greedy"
    methods = routing["methods"]
    assert methods["always_cheap"]["apgr"] == 0.0
    assert methods["always_best"]["cost_at_95"] == 1.0
    assert 0.0 <= methods["router"]["apgr"] <= 1.5


def test_training_is_deterministic() -> None:
    records, by_text = _synthetic()
    a = train(records, seed=5, arms=ARMS, featurize=_featurizer(by_text))
    b = train(records, seed=5, arms=ARMS, featurize=_featurizer(by_text))
    assert to_onnx(a).SerializeToString() == to_onnx(b).SerializeToString()
    assert json.dumps(a.metrics, sort_keys=True) == json.dumps(b.metrics, sort_keys=True)


def test_split_is_by_prompt_and_seeded() -> None:
    ids = [f"p{i}" for i in range(100)]
    s0 = split_prompts(ids, 0, 0.2)
    assert len(s0) == 20 and s0 == split_prompts(list(reversed(ids)), 0, 0.2)
    assert s0 != split_prompts(ids, 1, 0.2)


def test_save_writes_model_and_metadata(
    trained: tuple[TrainedModel, dict[str, NDArray[np.float32]]], tmp_path: Path
) -> None:
    import hashlib

    model, _ = trained
    meta = save_model(model, tmp_path, version_prefix="test")
    data = (tmp_path / "model.onnx").read_bytes()
    on_disk = json.loads((tmp_path / "metadata.json").read_text())
    assert on_disk == json.loads(json.dumps(meta))
    assert meta["arms"] == ARMS
    assert meta["onnx_sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["version"].startswith("test-") and meta["version"].endswith(meta["onnx_sha256"][:8])
    assert set(meta["tokens_hi_log_offset"]) == set(ARMS)
    assert meta["samples_per_call"]["cheap/vote@3"] == 3
    training = meta["training"]
    assert training["gap_weight"] in GAP_WEIGHTS
    assert set(training["gap_recalibration"]) == set(ARMS)
    assert len(training["gap_error_by_weight"]) == len(GAP_WEIGHTS)
    assert training["gap_full_information_share"] == 1.0
    assert training["cells_weight"] == model.cells_weight
    assert len(training["cells_error_by_weight"]) == len(CELL_WEIGHTS)


def test_the_gap_mix_is_chosen_on_full_information_prompts_only(
    trained: tuple[TrainedModel, dict[str, NDArray[np.float32]]],
) -> None:
    model, _ = trained
    gap = model.stack.gap
    assert gap.pairs == 3 * N_PROMPTS * 4 // 5  # three arm pairs on every training prompt
    assert gap.weight in GAP_WEIGHTS and len(gap.slope) == len(ARMS)
    assert gap.errors[gap.weight] == min(gap.errors.values())
    # Logged traffic, one arm per prompt: no pair to measure a gap on, the stack as fitted.
    records, by_text = _synthetic()
    logged = [
        replace(r, propensity=1 / 3)
        for r in records
        if ARMS.index(r.arm) == int(r.prompt_id[1:]) % len(ARMS)
    ]
    one_arm = train(logged, seed=3, arms=ARMS, featurize=_featurizer(by_text), test_fraction=0.0)
    assert one_arm.stack.gap == GapChoice(pairs=0)


@pytest.mark.parametrize(("covered", "cross_candidate"), [(0.1, False), (0.5, True), (1.0, True)])
def test_the_cross_arm_stack_needs_the_arms_seen_together_often_enough(
    covered: float, cross_candidate: bool
) -> None:
    """The stack form that reads every arm's logits is only compared with the others when
    it can be fitted on at least a quarter of each arm's prompts."""
    records, by_text = _synthetic()
    seen = {f"p{i}" for i in range(int(covered * N_PROMPTS))}
    partial = [r for r in records if r.arm != "big/greedy" or r.prompt_id in seen]
    model = train(partial, seed=3, arms=ARMS, featurize=_featurizer(by_text), test_fraction=0.0)
    assert ("per_arm_cross" in model.stack.cv_log_loss) is cross_candidate
    assert {"pooled", "per_arm"} <= set(model.stack.cv_log_loss)


def test_arm_without_token_counts_predicts_cost_directly() -> None:
    records, by_text = _synthetic()
    no_tokens = [
        OutcomeRecord(r.prompt_id, r.prompt, r.arm, r.score, r.cost_usd * (2 if i % 2 else 1))
        if r.arm == "big/greedy"
        else r
        for i, r in enumerate(records)
    ]
    model = train(no_tokens, seed=1, arms=ARMS, featurize=_featurizer(by_text), test_fraction=0.0)
    assert not model.per_arm["big/greedy"].tokens_observed
    assert model.per_arm["cheap/greedy"].tokens_observed
    _, t, c = model.predict_all(np.zeros((3, N_FEATURES), np.float32))
    assert np.allclose(t[:, 1], np.log(256.0))
    # cost of big/greedy: 60e-6 or 120e-6 per call in the data
    assert 50e-6 < float(c[0, 1]) < 130e-6
    assert float(c[0, 0]) < float(c[0, 1])


def test_an_arm_that_never_failed_is_predicted_near_but_below_certainty() -> None:
    """A tier that succeeded on every logged prompt (the logs of a closed loop can hold one)
    still trains: its scores become the KT estimate (m + 1/2) / (m + 1), so the model is
    confident but not certain, and the other arms are unaffected."""
    records, by_text = _synthetic()
    flat = [
        OutcomeRecord(r.prompt_id, r.prompt, r.arm, 1.0, r.cost_usd, output_tokens=r.output_tokens)
        if r.arm == "big/greedy"
        else r
        for r in records
    ]
    model = train(flat, seed=0, arms=ARMS, featurize=_featurizer(by_text), test_fraction=0.0)
    x = np.random.default_rng(5).normal(size=(50, N_FEATURES)).astype(np.float32)
    p, _, _ = model.predict_all(x)
    m = sum(1 for r in flat if r.arm == "big/greedy")
    kt = (m + 0.5) / (m + 1)
    assert np.all(p[:, 1] > 0.9) and np.all(p[:, 1] < 1.0)
    assert abs(float(p[:, 1].mean()) - kt) < 0.05
    assert float(p[:, 0].std()) > 0.05  # the first arm still depends on the prompt


def test_the_token_estimate_is_the_median_answer_length() -> None:
    """Answer lengths skewed in log space (one answer in five cut very short): the ridge's
    mean of log tokens would sit below most answers; the estimate is their median and the
    high estimate their 90th percentile, on prompts the model has not seen."""
    rng = np.random.default_rng(21)
    n_train, n_test = 400, 4000
    x = rng.normal(size=(n_train + n_test, N_FEATURES)).astype(np.float32)
    short = rng.random(n_train + n_test) < 0.2
    log_t = 5.0 + 0.5 * x[:, 1] + np.where(short, -2.0, 0.1 * rng.normal(size=short.size))
    arms = ["a/greedy", "b/greedy"]
    records = [
        OutcomeRecord(
            prompt_id=f"p{i}",
            prompt=f"prompt {i}",
            arm=arm,
            score=float(rng.random() < 0.5 + 0.2 * j),
            cost_usd=1e-5 * (1 + j),
            input_tokens=20,
            output_tokens=max(1, round(float(np.exp(log_t[i])))),
        )
        for i in range(n_train)
        for j, arm in enumerate(arms)
    ]
    by_text = {f"prompt {i}": x[i] for i in range(n_train)}
    model = train(records, seed=0, arms=arms, featurize=_featurizer(by_text), test_fraction=0.0)
    _, t = model.predict_arrays(x[n_train:])
    actual = log_t[n_train:]
    for j, arm in enumerate(arms):
        below = float(np.mean(actual <= t[:, j]))
        assert 0.42 < below < 0.58, (arm, below)  # a mean of logs would give about 0.2
        hi = t[:, j] + model.per_arm[arm].tokens_hi_log_offset
        assert 0.85 < float(np.mean(actual <= hi)) < 0.95


def test_tokens_per_sample_divides_by_the_samples_drawn() -> None:
    """An early-stopped vote records how many samples it drew; per-sample tokens use that
    count, and fall back to the arm's k when the record has none."""
    from classifier.outcomes_io import parse_record
    from classifier.train import tokens_per_sample

    base = {"prompt_id": "p", "prompt": "q", "arm": "a/vote@8", "score": 1, "cost_usd": 0.1}
    early = parse_record({**base, "output_tokens": 300, "samples": 3})
    full = parse_record({**base, "output_tokens": 800})
    assert early.samples == 3 and full.samples is None
    assert tokens_per_sample(early, samples_per_call(early.arm)) == 100.0
    assert tokens_per_sample(full, samples_per_call(full.arm)) == 100.0
    with pytest.raises(InvalidRequest, match="'samples'"):
        parse_record({**base, "samples": -1})


def test_large_reference_sets_are_compared_in_a_projected_space(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past the scan budget the kNN compares prompts in the reference rows' top singular
    directions, and ONNX Runtime computes exactly what training did."""
    import onnxruntime as ort

    import classifier.train as training

    records, by_text = _synthetic()
    dims = 64
    rng = np.random.default_rng(5)
    wide = {t: np.concatenate([v, rng.normal(size=dims - N_FEATURES)]) for t, v in by_text.items()}
    wide = {t: v.astype(np.float32) for t, v in wide.items()}
    names = [f"emb_{i:03d}" for i in range(dims)]
    small = train(records, seed=3, arms=ARMS, featurize=_featurizer(wide), feature_names=names)
    assert small.knn.projection is None  # 192 references × 64 columns: within the budget
    monkeypatch.setattr(training, "KNN_SCAN_BUDGET", 40 * 192)
    model = train(records, seed=3, arms=ARMS, featurize=_featurizer(wide), feature_names=names)
    proj = model.knn.projection
    assert proj is not None and proj.shape == (dims, 40)
    np.testing.assert_allclose(proj.T @ proj, np.eye(40), atol=1e-5)  # orthonormal directions
    assert model.knn.reference.shape == (192, 40)
    np.testing.assert_allclose(np.linalg.norm(model.knn.reference, axis=1), 1.0, atol=2e-3)
    x = np.random.default_rng(12).normal(size=(32, dims)).astype(np.float32)
    p_ref, _, _ = model.predict_all(x)
    sess = ort.InferenceSession(
        to_onnx(model).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    (p_onnx,) = sess.run([OUTPUT_P], {"features": x})
    np.testing.assert_allclose(p_onnx, p_ref, atol=1e-5, rtol=0)
    # The projected neighbours still carry the signal (success rises with feature 0).
    near_lo, _ = model.knn.predict(
        np.where(np.arange(dims) == 0, -3.0, 0.0)[None].astype(np.float32)
    )
    near_hi, _ = model.knn.predict(
        np.where(np.arange(dims) == 0, 3.0, 0.0)[None].astype(np.float32)
    )
    assert near_hi[0, 1] > near_lo[0, 1] + 0.2
