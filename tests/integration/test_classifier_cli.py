"""``ttc-router data import|split``, ``train``, ``predict``, ``eval`` end to end on a small slice
of real data (real embedder, real ONNX Runtime)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from classifier.importers import zeroeval
from router.cli.main import app

N_PROMPTS = 120


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CSV score table of ZeroEval prompts (three arms, cost columns) and its import."""
    root = tmp_path_factory.mktemp("cli")
    recs = zeroeval.import_zeroeval(count_tokens=lambda t: [len(x) // 4 for x in t])
    ids = sorted({r.prompt_id for r in recs})[:: max(1, 2840 // N_PROMPTS)][:N_PROMPTS]
    keep = set(ids)
    rows: dict[str, dict[str, object]] = {}
    for r in recs:
        if r.prompt_id in keep:
            row = rows.setdefault(r.prompt_id, {"prompt_id": r.prompt_id, "prompt": r.prompt})
            row[r.arm] = r.score
            row[f"{r.arm}:cost_usd"] = r.cost_usd
            row[f"{r.arm}:output_tokens"] = r.output_tokens
    arms = sorted({r.arm for r in recs})
    cols = [
        "prompt_id",
        "prompt",
        *arms,
        *(f"{a}:{c}" for a in arms for c in ("cost_usd", "output_tokens")),
    ]
    with (root / "table.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=cols)
        writer.writeheader()
        writer.writerows(rows.values())
    runner = CliRunner()
    res = runner.invoke(
        app, ["data", "import", str(root / "table.csv"), "--out", str(root / "all.jsonl")]
    )
    assert res.exit_code == 0, res.output
    assert f"({N_PROMPTS} prompts)" in res.output
    res = runner.invoke(
        app,
        [
            "data",
            "split",
            str(root / "all.jsonl"),
            "--train-out",
            str(root / "train.jsonl"),
            "--test-out",
            str(root / "test.jsonl"),
            "--test-fraction",
            "0.25",
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "train",
            "--outcomes",
            str(root / "train.jsonl"),
            "--out",
            str(root / "model"),
            "--seed",
            "3",
            "--no-refit",
        ],
    )
    assert res.exit_code == 0, res.output
    return root


def test_train_writes_model_metadata_and_card(work: Path) -> None:
    meta = json.loads((work / "model" / "metadata.json").read_text())
    assert meta["arms"] == ["local-7b/greedy", "mid-32b/greedy", "premium/greedy"]
    assert meta["training"]["seed"] == 3
    assert meta["training_data"]["files"][0]["path"] == str((work / "train.jsonl").resolve())
    assert "routing" in meta["metrics"] and "router" in meta["metrics"]["routing"]["methods"]
    assert (work / "model" / "model.onnx").stat().st_size < 5_000_000
    card = (work / "model" / "MODEL_CARD.md").read_text()
    assert meta["version"] in card and "| router |" in card


def test_train_is_deterministic(work: Path) -> None:
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--outcomes",
            str(work / "train.jsonl"),
            "--out",
            str(work / "again"),
            "--seed",
            "3",
            "--no-refit",
        ],
    )
    assert res.exit_code == 0, res.output
    first = json.loads((work / "model" / "metadata.json").read_text())
    second = json.loads((work / "again" / "metadata.json").read_text())
    assert first["onnx_sha256"] == second["onnx_sha256"]
    assert first["metrics"] == second["metrics"]


def test_predict_uses_the_service_predictor(work: Path) -> None:
    from classifier.embedding_cache import CachedPromptEmbedder
    from classifier.jobs import read_prompts
    from classifier.predictor import OnnxPredictor

    out = work / "pred.jsonl"
    res = CliRunner().invoke(
        app,
        [
            "predict",
            "--model",
            str(work / "model"),
            "--prompts",
            str(work / "test.jsonl"),
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    ids, texts = read_prompts(work / "test.jsonl")
    assert [x["prompt_id"] for x in lines] == ids
    predictor = OnnxPredictor.load(work / "model")
    emb = CachedPromptEmbedder().embed(texts[:5])
    direct = predictor.predict_batch(emb, texts[:5])
    for line, pred in zip(lines[:5], direct, strict=True):
        for arm, got in line["arms"].items():
            assert got["p_success"] == pytest.approx(pred.arms[arm].p_success, abs=1e-6)
            assert got["cost_usd"] > 0
    ps = np.asarray([[a["p_success"] for a in x["arms"].values()] for x in lines])
    assert ((ps >= 0) & (ps <= 1)).all() and ps.std() > 0.01


def test_eval_reports_router_baselines_and_oracle(work: Path) -> None:
    res = CliRunner().invoke(
        app,
        ["eval", "--model", str(work / "model"), "--outcomes", str(work / "test.jsonl"), "--json"],
    )
    assert res.exit_code == 0, res.output
    report = json.loads(res.output)
    methods = report["routing"]["methods"]
    for name in (
        "router",
        "random",
        "always_cheap",
        "always_best",
        "oracle",
        "knn20",
        "logreg",
        "mf",
        "mlp",
        "task_complexity",
    ):
        assert name in methods, name
    assert methods["always_cheap"]["apgr"] == 0.0
    assert methods["oracle"]["max_score"] >= methods["always_best"]["max_score"]
    assert set(report["per_arm"]) == {"local-7b/greedy", "mid-32b/greedy", "premium/greedy"}
    for entry in report["per_arm"].values():
        assert 0.0 < entry["ece_if_calibrated_median"] < entry["ece_if_calibrated_p95"] < 0.5
    versus = report["routing"]["versus"]
    assert set(versus) == {"knn20", "logreg", "mf", "mlp", "task_complexity"}
    for v in versus.values():
        for key in ("apgr", "cost_at_95"):
            assert v[key]["lo"] <= v[key]["hi"] and 0.0 <= v[key]["ahead_share"] <= 1.0
    knn_gap = methods["router"]["apgr"] - methods["knn20"]["apgr"]
    assert versus["knn20"]["apgr"]["observed"] == pytest.approx(knn_gap)
    png = work / "curve.png"
    table = CliRunner().invoke(
        app,
        [
            "eval",
            "--model",
            str(work / "model"),
            "--outcomes",
            str(work / "test.jsonl"),
            "--plot",
            str(png),
        ],
    )
    assert table.exit_code == 0 and "| task_complexity |" in table.output
    assert "paired bootstrap" in table.output and "ECE if calibrated" in table.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


def test_bad_inputs_fail_with_file_and_line(work: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "train",
            "--outcomes",
            str(work / "train.jsonl"),
            "--out",
            str(work / "x"),
            "--arms",
            "local-7b/greedy,nope/greedy",
        ],
    )
    assert res.exit_code == 2
    assert "train.jsonl" in res.output and "nope/greedy" in res.output
    bad = work / "bad.jsonl"
    good = (work / "train.jsonl").read_text().splitlines()
    broken = json.loads(good[1])
    broken["score"] = "high"
    bad.write_text("\n".join([good[0], json.dumps(broken), *good[2:]]) + "\n")
    res = runner.invoke(app, ["train", "--outcomes", str(bad), "--out", str(work / "x")])
    assert res.exit_code == 2
    assert f"{bad}:2" in res.output.replace("\n", "") and "score" in res.output
    res = runner.invoke(app, ["data", "import", "no-such-source", "--out", str(work / "x.jsonl")])
    assert res.exit_code == 2 and "unknown source" in res.output


def test_eval_folds_tests_every_prompt_once_through_onnx(work: Path) -> None:
    from classifier.crossval import cross_validate
    from classifier.embedding_cache import CachedPromptEmbedder
    from classifier.evaluate import distinct_prompts
    from classifier.features import feature_names, features_for
    from classifier.outcomes_io import read_outcomes

    png = work / "cv.png"
    args = ["eval", "--outcomes", str(work / "all.jsonl"), "--folds", "3", "--seed", "2"]
    res = CliRunner().invoke(app, [*args, "--json", "--plot", str(png)])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["test_prompts"] == N_PROMPTS and report["folds"] == 3
    assert sum(f["test_prompts"] for f in report["fold_models"]) == N_PROMPTS
    assert {e["n"] for e in report["per_arm"].values()} == {N_PROMPTS}
    assert report["routing"]["prompts"] == N_PROMPTS
    assert set(report["routing"]["versus"]) == {"knn20", "logreg", "mf", "mlp", "task_complexity"}
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The exported fold models (ONNX Runtime) predict what the fitted parts do.
    records = read_outcomes(work / "all.jsonl")
    ids, texts = distinct_prompts(records)
    emb = CachedPromptEmbedder()
    x = features_for(emb.embed(texts), texts)
    direct = cross_validate(
        records,
        x,
        {pid: i for i, pid in enumerate(ids)},
        folds=3,
        seed=2,
        feature_names=feature_names(emb.dim),
    )
    for arm, entry in report["per_arm"].items():
        assert entry["mean_p"] == pytest.approx(direct["per_arm"][arm]["mean_p"], abs=1e-5)
        assert entry["brier"] == pytest.approx(direct["per_arm"][arm]["brier"], abs=1e-5)
    table = CliRunner().invoke(app, args)
    assert table.exit_code == 0, table.output
    assert f"3-fold cross-validation (seed 2) on {N_PROMPTS} prompts" in table.output
    assert "mean over 3 folds, each scored with its own model" in table.output
    assert "| task_complexity |" in table.output
    assert [f["routing"]["prompts"] for f in report["fold_models"]] == [
        f["test_prompts"] for f in report["fold_models"]
    ]
    mean_apgr = np.mean([f["routing"]["apgr"] for f in report["fold_models"]])
    assert report["routing"]["methods"]["router"]["apgr"] == pytest.approx(mean_apgr)


def test_eval_needs_exactly_one_of_model_and_folds(work: Path) -> None:
    runner = CliRunner()
    test = ["--outcomes", str(work / "test.jsonl")]
    res = runner.invoke(app, ["eval", *test])
    assert res.exit_code == 2 and "--model MODEL_DIR" in res.output and "--folds K" in res.output
    res = runner.invoke(app, ["eval", *test, "--model", str(work / "model"), "--folds", "3"])
    assert res.exit_code == 2 and "one of the two" in res.output
    res = runner.invoke(
        app, ["eval", *test, "--folds", "3", "--train-outcomes", str(work / "train.jsonl")]
    )
    assert res.exit_code == 2 and "--train-outcomes is for --model" in res.output
    res = runner.invoke(app, ["eval", *test, "--folds", "1"])
    assert res.exit_code == 2 and "--folds must be between 2 and 20" in res.output
    res = runner.invoke(app, ["eval", *test, "--folds", "3", "--arms", "local-7b/greedy,x/greedy"])
    assert res.exit_code == 2 and "x/greedy" in res.output


def _halves(path: Path) -> tuple[Path, Path]:
    """The file's records in two files, split between prompts, order kept."""
    lines = path.read_text().splitlines()
    cut = len(lines) // 2
    while json.loads(lines[cut])["prompt_id"] == json.loads(lines[cut - 1])["prompt_id"]:
        cut += 1
    first, second = path.with_suffix(".a.jsonl"), path.with_suffix(".b.jsonl")
    first.write_text("\n".join(lines[:cut]) + "\n")
    second.write_text("\n".join(lines[cut:]) + "\n")
    return first, second


def test_several_outcome_files_after_one_flag(work: Path) -> None:
    """``train --outcomes A B`` and ``eval --outcomes A B`` read both files, as one would."""
    runner = CliRunner()
    tr_a, tr_b = _halves(work / "train.jsonl")
    out = work / "two-files"
    args = ["--out", str(out), "--seed", "3", "--no-refit"]
    res = runner.invoke(app, ["train", "--outcomes", str(tr_a), str(tr_b), *args])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "metadata.json").read_text())
    assert [f["path"] for f in meta["training_data"]["files"]] == [
        str(tr_a.resolve()),
        str(tr_b.resolve()),
    ]
    single = json.loads((work / "model" / "metadata.json").read_text())
    assert meta["onnx_sha256"] == single["onnx_sha256"]

    te_a, te_b = _halves(work / "test.jsonl")
    model = ["--model", str(work / "model"), "--json"]
    both = runner.invoke(app, ["eval", "--outcomes", str(te_a), str(te_b), *model])
    whole = runner.invoke(app, ["eval", "--outcomes", str(work / "test.jsonl"), *model])
    assert both.exit_code == 0 and whole.exit_code == 0, both.output + whole.output
    got, want = json.loads(both.stdout), json.loads(whole.stdout)
    assert got["routing"]["prompts"] == want["routing"]["prompts"] > 0
    assert got["routing"]["methods"] == want["routing"]["methods"]

    # a stray argument after another option is still refused, not read as a file
    stray = ["eval", "--model", str(work / "model"), "stray", "--outcomes", str(te_a)]
    res = runner.invoke(app, stray)
    assert res.exit_code == 2 and "unexpected extra argument(s) (stray)" in res.output


def test_eval_routes_among_the_arms_a_test_file_has(work: Path) -> None:
    lines = (work / "test.jsonl").read_text().splitlines()
    two = work / "test-two-arms.jsonl"
    two.write_text("\n".join(x for x in lines if '"premium/greedy"' not in x) + "\n")
    one = work / "test-one-arm.jsonl"
    one.write_text("\n".join(x for x in lines if '"local-7b/greedy"' in x) + "\n")
    runner = CliRunner()
    model = ["--model", str(work / "model")]
    res = runner.invoke(app, ["eval", *model, "--outcomes", str(two), "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["routed_arms"] == ["local-7b/greedy", "mid-32b/greedy"]
    routing = report["routing"]
    assert {routing["cheap_arm"], routing["best_arm"]} <= set(report["routed_arms"])
    assert "cpt50" in routing["methods"]["router"]  # the two-arm figures
    assert set(report["per_arm"]) == set(report["routed_arms"])
    table = runner.invoke(app, ["eval", *model, "--outcomes", str(one)])
    assert table.exit_code == 0, table.output
    assert "Routing not measured" in table.output and "at least two" in table.output


def _rescaled(path: Path, out: Path, scale: float, shift: float) -> Path:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    out.write_text(
        "".join(json.dumps({**r, "score": r["score"] * scale + shift}) + "\n" for r in rows)
    )
    return out


@pytest.mark.parametrize(("scale", "shift"), [(10.0, 0.0), (2.0, -1.0)])
def test_scores_on_another_scale(work: Path, scale: float, shift: float) -> None:
    """A table scored 0–10 (or −1…1) trains the model its [0, 1] copy trains; predict
    reports p_success on the table's scale, and eval's routing figures do not move."""
    runner = CliRunner()
    train = _rescaled(work / "train.jsonl", work / f"train-{scale:g}.jsonl", scale, shift)
    test = _rescaled(work / "test.jsonl", work / f"test-{scale:g}.jsonl", scale, shift)
    out = work / f"model-{scale:g}"
    res = runner.invoke(
        app, ["train", "--outcomes", str(train), "--out", str(out), "--seed", "3", "--no-refit"]
    )
    assert res.exit_code == 0, res.output
    assert f"scores run from {shift:g} to {scale + shift:g}" in res.output
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["score_scale"] == {"lo": shift, "hi": scale + shift}
    plain = json.loads((work / "model" / "metadata.json").read_text())
    assert "score_scale" not in plain
    assert meta["onnx_sha256"] == plain["onnx_sha256"]
    assert "Scores run from" in (out / "MODEL_CARD.md").read_text()

    pred, pred_plain = work / f"pred-{scale:g}.jsonl", work / "pred-plain.jsonl"
    for model, dest in ((out, pred), (work / "model", pred_plain)):
        res = runner.invoke(
            app, ["predict", "--model", str(model), "--prompts", str(test), "--out", str(dest)]
        )
        assert res.exit_code == 0, res.output
    for got, want in zip(
        pred.read_text().splitlines(), pred_plain.read_text().splitlines(), strict=True
    ):
        g, w = json.loads(got)["arms"], json.loads(want)["arms"]
        for arm in w:
            assert g[arm]["p_success"] == pytest.approx(
                w[arm]["p_success"] * scale + shift, abs=1e-5
            )
            assert g[arm]["cost_usd"] == w[arm]["cost_usd"]

    reports = []
    for model, table in ((out, test), (work / "model", work / "test.jsonl")):
        res = runner.invoke(
            app, ["eval", "--model", str(model), "--outcomes", str(table), "--json"]
        )
        assert res.exit_code == 0, res.output
        reports.append(json.loads(res.stdout))
    assert reports[0]["score_scale"] == meta["score_scale"]
    for name in ("router", "task_complexity", "oracle"):
        for key in ("apgr", "cost_at_95"):
            assert reports[0]["routing"]["methods"][name][key] == pytest.approx(
                reports[1]["routing"]["methods"][name][key]
            )
    if shift == 0.0:  # cross-validation reads the table by its own range
        whole = _rescaled(work / "all.jsonl", work / f"all-{scale:g}.jsonl", scale, shift)
        cv = []
        for table in (whole, work / "all.jsonl"):
            args = ["eval", "--folds", "2", "--outcomes", str(table), "--json"]
            res = runner.invoke(app, args)
            assert res.exit_code == 0, res.output
            cv.append(json.loads(res.stdout))
        assert cv[0]["score_scale"] == {"lo": 0.0, "hi": scale} and "score_scale" not in cv[1]
        assert cv[0]["routing"]["methods"]["router"] == pytest.approx(
            cv[1]["routing"]["methods"]["router"]
        )


def test_outputs_that_cannot_be_written_are_refused_up_front(work: Path) -> None:
    """An --out or --plot under a file (not a folder) gets a clear error, before any work."""
    runner = CliRunner()
    blocked = work / "train.jsonl" / "sub"  # a folder path through a regular file
    model = ["--model", str(work / "model")]
    cases = [
        ["train", "--outcomes", str(work / "train.jsonl"), "--out", str(blocked)],
        ["predict", *model, "--prompts", str(work / "test.jsonl"), "--out", str(blocked / "p")],
        ["eval", *model, "--outcomes", str(work / "test.jsonl"), "--plot", str(blocked / "c.png")],
        [
            "data",
            "split",
            str(work / "all.jsonl"),
            "--train-out",
            str(blocked / "a.jsonl"),
            "--test-out",
            str(work / "b.jsonl"),
        ],
    ]
    for args in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert f"cannot create {blocked}" in res.output.replace("\n", ""), res.output
        assert "Traceback" not in res.output
    # train refuses before embedding or fitting anything: its bar never moves off 0%
    res = runner.invoke(app, cases[0])
    assert " 0%" in res.output and "100%" not in res.output and "wrote" not in res.output


def test_out_of_range_numbers_are_usage_errors(work: Path) -> None:
    """Seeds numpy and scikit-learn cannot take, and a negative token assumption, are
    refused by the command line (exit 2, the option named), not by a stack trace."""
    runner = CliRunner()
    train = ["train", "--outcomes", str(work / "train.jsonl"), "--out", str(work / "s")]
    for seed in ("-1", str(2**32)):
        res = runner.invoke(app, [*train, "--seed", seed])
        assert res.exit_code == 2 and "--seed" in res.output and "Traceback" not in res.output
    res = runner.invoke(
        app, ["eval", "--folds", "2", "--outcomes", str(work / "all.jsonl"), "--seed", "-3"]
    )
    assert res.exit_code == 2 and "--seed" in res.output
    res = runner.invoke(
        app,
        [
            "data",
            "import",
            "llmrouter",
            "--out",
            str(work / "l.jsonl"),
            "--assumed-output-tokens",
            "0",
        ],
    )
    assert res.exit_code == 2 and "--assumed-output-tokens" in res.output
    assert not (work / "s").exists() and not (work / "l.jsonl").exists()


def test_eval_says_when_test_prompts_were_trained_on(work: Path) -> None:
    runner = CliRunner()
    model = ["eval", "--model", str(work / "model"), "--json"]
    held = json.loads(runner.invoke(app, [*model, "--outcomes", str(work / "test.jsonl")]).stdout)
    assert "test_prompts_in_training" not in held
    res = runner.invoke(app, [*model, "--outcomes", str(work / "all.jsonl")])
    report = json.loads(res.stdout)
    n_train = len(
        {json.loads(x)["prompt_id"] for x in (work / "train.jsonl").read_text().splitlines()}
    )
    assert report["test_prompts_in_training"] == n_train and report["test_prompts"] == N_PROMPTS
    # the same text under a new id counts too, and data split says so when it splits one
    twice = work / "twice.jsonl"
    lines = (work / "all.jsonl").read_text().splitlines()
    again = [
        json.dumps({**json.loads(x), "prompt_id": "again-" + json.loads(x)["prompt_id"]})
        for x in lines
    ]
    twice.write_text("\n".join([*lines, *again]) + "\n")
    res = runner.invoke(
        app,
        [
            "data",
            "split",
            str(twice),
            "--train-out",
            str(work / "t1.jsonl"),
            "--test-out",
            str(work / "t2.jsonl"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "test prompts repeat the text of a training prompt" in res.output
    renamed = work / "renamed.jsonl"
    rows = [json.loads(x) for x in (work / "train.jsonl").read_text().splitlines()]
    renamed.write_text(
        "".join(json.dumps({**r, "prompt_id": "new-" + r["prompt_id"]}) + "\n" for r in rows)
    )
    table = runner.invoke(app, ["eval", "--model", str(work / "model"), "--outcomes", str(renamed)])
    assert table.exit_code == 0, table.output
    assert f"Warning: {n_train} of the {n_train} test prompts also appear" in table.output
