"""``ttc-router simulate`` on the real MoT-cascade files, then ``train`` and ``eval`` on the
vote and escalation arms it writes.

The MoT-cascade set has no licence: it is read from ../shared/data at run time and nothing
derived from it is kept."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from classifier.importers.zeroeval import default_data_dir
from classifier.outcomes_io import read_outcomes
from router.cli.main import app

DATA = default_data_dir()
MOT = DATA / "mot-cascade"
N_CHECK = 80
N_TRAIN = 120


def _run(args: list[str]) -> str:
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    return res.stdout


def _simulate(out: Path, limit: int, *extra: str) -> dict[str, Any]:
    stdout = _run(
        [
            *("simulate", "mot-cascade", "--data", str(DATA), "--out", str(out)),
            *("--limit", str(limit), "--json", *extra),
        ]
    )
    report: dict[str, Any] = json.loads(stdout)
    return report


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("simulate") / "sim.jsonl"
    report = _simulate(out, N_CHECK, "--k", "3,5", "--permutations", "4", "--seed", "7")
    return report, out


def _arms(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["arm"]: a for a in report["arms"]}


def _first_answer_correct(path: Path, questions: list[str]) -> float:
    """Share of the questions whose first stored answer equals the gold answer, read
    straight from the raw file."""
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        rows = {r["question"]: r for r in json.load(handle)}
    right = 0
    for q in questions:
        row = rows[q]
        first = row["results"][0] if row["results"] else None
        right += first is not None and abs(float(first) - float(row["answer"])) < 1e-6
    return right / len(questions)


def test_report_covers_the_prompts_and_arms(run: tuple[dict[str, Any], Path]) -> None:
    report, out = run
    assert report["prompts"] == N_CHECK and report["dropped_prompts"] == 0
    tiers = {t["tier"]: t for t in report["tiers"]}
    assert tiers["cheap"]["model"] == "llama2_13B" and tiers["cheap"]["samples_per_prompt"] == 24
    assert tiers["strong"]["model"] == "GPT4" and tiers["strong"]["samples_per_prompt"] == 3
    arms = _arms(report)
    assert "strong/vote@5" not in arms and any("strong/vote@5" in s for s in report["skipped_arms"])
    records = read_outcomes(out)
    assert len(records) == N_CHECK * len(arms)
    by_prompt: dict[str, set[str]] = defaultdict(set)
    for r in records:
        by_prompt[r.prompt_id].add(r.arm)
    assert all(got == set(arms) for got in by_prompt.values())  # full information


def test_decided_keeps_the_full_vote_accuracy(run: tuple[dict[str, Any], Path]) -> None:
    arms = _arms(run[0])
    for tier, ks in (("cheap", (3, 5)), ("strong", (3,))):
        for k in ks:
            none = arms[f"{tier}/vote-none@{k}"]
            decided = arms[f"{tier}/vote@{k}"]
            adaptive = arms[f"{tier}/vote-adaptive@{k}"]
            assert decided["accuracy"] == pytest.approx(none["accuracy"], abs=1e-12)
            assert none["samples"] == k
            assert adaptive["samples"] <= decided["samples"] <= k
            assert decided["cost_usd"] <= none["cost_usd"]
    for k in (3, 5):
        none, decided = arms[f"cheap/escalate-none-a60@{k}"], arms[f"cheap/escalate-a60@{k}"]
        assert decided["accuracy"] == pytest.approx(none["accuracy"], abs=1e-12)
        assert decided["escalated"] == pytest.approx(none["escalated"], abs=1e-12)
        assert 0 < none["escalated"] < 1


def test_records_use_at_most_k_samples(run: tuple[dict[str, Any], Path]) -> None:
    lines = [json.loads(x) for x in run[1].read_text(encoding="utf-8").splitlines()]
    cost: dict[tuple[str, str], float] = {}
    for line in lines:
        strategy = line["arm"].split("/", 1)[1]
        k = int(strategy.split("@")[1]) if "@" in strategy else 1
        if strategy.startswith("escalate-none"):
            assert k <= line["samples"] <= k + 1  # the full vote, plus one strong call at most
        elif strategy.startswith("escalate"):
            assert 1 <= line["samples"] <= k + 1
        else:
            assert 1 <= line["samples"] <= k
        cost[(line["prompt_id"], line["arm"])] = line["cost_usd"]
    for pid in {pid for pid, _ in cost}:
        assert cost[(pid, "cheap/vote@5")] <= cost[(pid, "cheap/vote-none@5")]
        # A cascade pays at least its full vote on the cheap tier.
        assert cost[(pid, "cheap/escalate-none-a60@5")] >= cost[(pid, "cheap/vote-none@5")]


def test_greedy_is_the_first_stored_answer(run: tuple[dict[str, Any], Path]) -> None:
    report, out = run
    prompts = {r.prompt_id: r.prompt for r in read_outcomes(out)}
    questions = [prompts[f"mot-cascade/gsm/{i}"] for i in range(N_CHECK)]
    arms = _arms(report)
    cheap = _first_answer_correct(MOT / "llama2_13B_result" / "gsm_pot1.json.gz", questions)
    strong = _first_answer_correct(MOT / "GPT4_result" / "gsm_pot1.json.gz", questions)
    assert arms["cheap/greedy"]["accuracy"] == pytest.approx(cheap, abs=1e-12)
    assert arms["strong/greedy"]["accuracy"] == pytest.approx(strong, abs=1e-12)
    assert cheap < strong


def test_same_seed_same_records(run: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    again = tmp_path / "again.jsonl"
    _simulate(again, N_CHECK, "--k", "3,5", "--permutations", "4", "--seed", "7")
    assert again.read_bytes() == run[1].read_bytes()


def test_table_output(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        app,
        [
            *("simulate", "mot-cascade", "--data", str(DATA), "--out", str(tmp_path / "t.jsonl")),
            *("--limit", "10", "--k", "3", "--early-stop", "none"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "cheap/vote-none@3" in res.stdout and "cheap/escalate-none-a60@3" in res.stdout
    assert "wrote 50 records" in res.stdout  # 2 greedy + 2 votes + 1 cascade, 10 prompts


def test_bad_options_are_clear_errors(tmp_path: Path) -> None:
    out = str(tmp_path / "x.jsonl")
    for extra, message in (
        (["--k", "1"], "vote sizes must be 2..64"),
        (["--early-stop", "later"], "unknown early-stop rule 'later'"),
        (["--tiers", "cheap=llama3"], "no MoT-cascade results for model 'llama3'"),
        (["--task", "navigate"], "has no navigate pot1 file"),
        (["--prices", "premium=1/2"], "not simulated"),
    ):
        res = CliRunner().invoke(
            app, ["simulate", "mot-cascade", "--data", str(DATA), "--out", out, *extra]
        )
        assert res.exit_code == 2, res.output
        assert message in res.output, res.output


def test_vote_arms_train_and_evaluate(tmp_path: Path) -> None:
    sim = tmp_path / "sim.jsonl"
    report = _simulate(sim, N_TRAIN, "--k", "5", "--early-stop", "decided,adaptive")
    assert set(_arms(report)) == {
        "cheap/greedy",
        "cheap/vote@5",
        "cheap/vote-adaptive@5",
        "strong/greedy",
        "cheap/escalate-a60@5",
        "cheap/escalate-adaptive-a60@5",
    }
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    _run(
        [
            *("data", "split", str(sim), "--train-out", str(train), "--test-out", str(test)),
            *("--test-fraction", "0.25"),
        ]
    )
    model = tmp_path / "model"
    _run(["train", "--outcomes", str(train), "--out", str(model), "--no-refit", "--seed", "1"])
    meta = json.loads((model / "metadata.json").read_text(encoding="utf-8"))
    assert meta["samples_per_call"]["cheap/vote@5"] == 5
    assert "cheap/escalate-a60@5" in meta["arms"]
    ev = json.loads(_run(["eval", "--model", str(model), "--outcomes", str(test), "--json"]))
    per_arm = ev["per_arm"]
    for arm in ("cheap/vote@5", "cheap/vote-adaptive@5", "cheap/escalate-a60@5"):
        assert per_arm[arm]["n"] == ev["test_prompts"]
        assert 0.0 <= per_arm[arm]["mean_p"] <= 1.0
    methods = ev["routing"]["methods"]
    assert "router" in methods and "oracle" in methods
    assert methods["oracle"]["max_score"] >= methods["always_best"]["max_score"]
