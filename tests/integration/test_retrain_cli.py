"""``ttc-router retrain`` end to end on logged traffic simulated from a real public table.

ZeroEval holds every arm's real outcome on every prompt. A logging policy with exploration
serves each of a subset of its prompts a few times, picking ``local-7b/greedy`` or
``premium/greedy`` with known propensities; only the picked arm's record is kept, written
as the service writes decisions and, later, scores. A model trained on inverted scores is
the promoted (bad) model in a registry; ``retrain`` must replace it. A second run whose
training part is junk (scores shuffled) must be refused and say why. Real embedder, real
ONNX Runtime.

Two arms, because on ZeroEval's three the middle tier alone recovers most of the gap
between the cheap and the best arm: any model that only knows the arms' base rates (which
is what shuffled scores leave) routes nearly as well as one that reads the prompt, and the
junk run would not be worse. Records of ``mid-32b/greedy`` stand in for a tier the current
model does not know.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from classifier.importers import zeroeval
from classifier.outcomes_io import OutcomeRecord, write_outcomes
from classifier.registry import Registry
from classifier.retrain import REPORT_JSON, REPORT_MD, held_apart, prompt_key
from router.cli.main import app

pytestmark = pytest.mark.integration

SEED = 5
N_LOGGED = 800
REQUESTS_PER_PROMPT = 4
N_PLUS = 200
N_BAD = 60
HOLDOUT = "0.3"
DAY = "2026-01-05"
SINCE = "2026-01-01"
ARMS = ["local-7b/greedy", "premium/greedy"]
UNKNOWN_ARM = "mid-32b/greedy"
N_UNKNOWN = 25
N_FALLBACK = 5
N_UNSCORED = 10
N_OLD = 30


@dataclass
class World:
    root: Path
    registry: Path
    bad_version: str
    decisions: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    plus: list[OutcomeRecord]


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _decision(rec: OutcomeRecord, n: int, propensity: float, day: str) -> dict[str, Any]:
    """A decision record as the service writes it: prompt id = request id, no score yet."""
    out = rec.to_json()
    rid = f"req-{day}-{n}"
    out.update(
        prompt_id=rid,
        request_id=rid,
        decision_id=f"dec-{day}-{n}",
        score=None,
        propensity=propensity,
        task="traffic",
        tenant="acme",
        ts=f"{day}T10:00:00+00:00",
    )
    return out


def _score(decision: dict[str, Any], score: float, day: str) -> dict[str, Any]:
    return {
        "decision_id": decision["decision_id"],
        "tenant": "acme",
        "score": score,
        "ts": f"{day}T12:00:00+00:00",
    }


def _write_logs(
    directory: Path, decisions: list[dict[str, Any]], scores: list[dict[str, Any]]
) -> None:
    directory.mkdir(parents=True)
    _jsonl(directory / f"decisions-{DAY}.node-a.jsonl", decisions)
    _jsonl(directory / f"scores-{DAY}.node-a.jsonl", scores)


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, ["retrain", *args])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("retrain")
    recs = zeroeval.import_zeroeval(count_tokens=lambda t: [len(x) // 4 for x in t])
    arms = ARMS
    ids = sorted({r.prompt_id for r in recs})
    rng = np.random.default_rng(SEED)
    order = [ids[i] for i in rng.permutation(len(ids))]
    logged_ids = order[:N_LOGGED]
    plus_ids = set(order[N_LOGGED : N_LOGGED + N_PLUS])
    bad_ids = set(order[N_LOGGED + N_PLUS : N_LOGGED + N_PLUS + N_BAD])
    cell = {(r.prompt_id, r.arm): r for r in recs}

    # The deliberately bad model: trained on inverted scores, promoted in the registry.
    inverted = [
        replace(r, score=1.0 - r.score) for r in recs if r.prompt_id in bad_ids and r.arm in ARMS
    ]
    write_outcomes(root / "inverted.jsonl", inverted)
    res = CliRunner().invoke(
        app,
        [
            "train",
            "--outcomes",
            str(root / "inverted.jsonl"),
            "--out",
            str(root / "bad"),
            "--seed",
            "0",
            "--no-refit",
        ],
    )
    assert res.exit_code == 0, res.output
    registry = Registry(root / "registry")
    bad_version = registry.add(root / "bad")
    registry.promote(bad_version, "deliberately bad starting point")

    # Logged traffic: each prompt served a few times; the logging policy favours one arm
    # per request (probability 0.7) and explores the other (0.3).
    decisions: list[dict[str, Any]] = []
    scores: list[dict[str, Any]] = []
    for pid in logged_ids:
        for _ in range(REQUESTS_PER_PROMPT):
            probs = np.full(len(arms), 0.3)
            probs[rng.integers(len(arms))] = 0.7
            j = int(rng.choice(len(arms), p=probs))
            rec = cell[(pid, arms[j])]
            d = _decision(rec, len(decisions), float(probs[j]), DAY)
            decisions.append(d)
            scores.append(_score(d, rec.score, DAY))
    # Records retrain must leave out: an arm the current model does not know, requests
    # served by a fallback tier, requests never scored, and an older day before --since
    # (scored the wrong way round).
    extra: list[dict[str, Any]] = []
    for k in range(N_UNKNOWN):
        rec = cell[(logged_ids[k], UNKNOWN_ARM)]
        d = _decision(rec, 10_000 + k, 0.1, DAY)
        extra.append(d)
        scores.append(_score(d, rec.score, DAY))
    for k in range(N_FALLBACK):
        rec = cell[(logged_ids[k], arms[1])]
        d = _decision(rec, 15_000 + k, 0.7, DAY)
        d["fallback_from"] = "mid-32b"
        extra.append(d)
        scores.append(_score(d, rec.score, DAY))
    for k in range(N_UNSCORED):
        extra.append(_decision(cell[(logged_ids[k], arms[0])], 20_000 + k, 0.5, DAY))
    logs = root / "logs"
    _write_logs(logs, decisions + extra, scores)
    old_day = "2025-12-01"
    old = [
        _decision(cell[(logged_ids[k], arms[0])], 30_000 + k, 0.5, old_day) for k in range(N_OLD)
    ]
    _jsonl(logs / f"decisions-{old_day}.node-a.jsonl", old)
    _jsonl(
        logs / f"scores-{old_day}.node-a.jsonl",
        [_score(d, 1.0 - cell[(logged_ids[k], arms[0])].score, old_day) for k, d in enumerate(old)],
    )
    plus = [r for r in recs if r.prompt_id in plus_ids]
    write_outcomes(root / "plus.jsonl", plus)
    return World(root, root / "registry", bad_version, decisions, scores, plus)


@pytest.fixture(scope="module")
def first(world: World) -> dict[str, Any]:
    out = world.root / "candidate-1"
    res = _run(
        "--logs",
        str(world.root / "logs"),
        "--since",
        SINCE,
        "--plus",
        str(world.root / "plus.jsonl"),
        "--registry",
        str(world.registry),
        "--out",
        str(out),
        "--holdout",
        HOLDOUT,
        "--seed",
        "0",
        "--json",
    )
    assert res.exit_code == 0, res.output
    report: dict[str, Any] = json.loads(res.stdout)
    assert report == json.loads((out / REPORT_JSON).read_text())
    return report


def test_retrain_promotes_a_candidate_over_a_bad_model(world: World, first: dict[str, Any]) -> None:
    assert first["promoted"] is True, first["reason"]
    assert first["reason"].startswith("not worse than the current model beyond the margins")
    assert first["current"]["version"] == world.bad_version
    version = first["candidate"]["version"]
    registry = Registry(world.registry)
    assert registry.current_version() == version
    entry = registry.show(version)
    assert entry.parent == world.bad_version
    assert entry.data_digest == first["data"]["train"]["records_sha256"]
    assert entry.metrics["retrain"]["promoted"] is True
    dr_apgr = first["evaluation"]["logs"]["estimators"]["dr"]["candidate"]["apgr"]
    assert entry.metrics["retrain"]["candidate"]["logs_dr"]["apgr"] == dr_apgr
    assert registry.history()[-1].reason.startswith("ttc-router retrain: not worse")

    data = first["data"]
    assert data["scored_log_records"] == len(world.decisions) + N_UNKNOWN + N_FALLBACK
    assert data["skipped_log_records"]["unknown_arm"] == {UNKNOWN_ARM: N_UNKNOWN}
    assert data["skipped_log_records"]["fallback"] == N_FALLBACK
    assert data["skipped_plus_records"]["unknown_arm"] == {UNKNOWN_ARM: N_PLUS}
    held = data["held_apart"]["logged_records"]
    assert held + data["train"]["logged_records"] == len(world.decisions)
    assert 0.2 * len(world.decisions) < held < 0.4 * len(world.decisions)
    used_plus = len(world.plus) - N_PLUS
    assert data["train"]["plus_records"] + data["held_apart"]["plus_records"] == used_plus

    logs = first["evaluation"]["logs"]
    assert set(logs["estimators"]) == {"ips", "snips", "dr"}
    dr = logs["estimators"]["dr"]
    assert dr["apgr_gain"]["low"] > 0.0
    assert dr["candidate"]["apgr"] > dr["current"]["apgr"]
    full = first["evaluation"]["full_information"]
    assert full["arms"] == ARMS
    assert full["exact"]["apgr_gain"]["point"] > 0.0
    assert [c["passed"] for c in first["gate"]["checks"]] == [True] * 4

    table = (world.root / "candidate-1" / REPORT_MD).read_text()
    assert table.startswith(f"PROMOTE: candidate {version} replaces {world.bad_version}")
    assert "| dr (gate) |" in table and "| exact (gate) |" in table
    assert f"arms the current model does not know ({UNKNOWN_ARM}: {N_UNKNOWN})" in table
    meta = json.loads((world.root / "candidate-1" / "metadata.json").read_text())
    assert meta["metrics"]["retrain"]["promoted"] is True


@pytest.fixture(scope="module")
def second(world: World, first: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The same traffic and tables with every score of the training part shuffled."""
    keys = [prompt_key(d["prompt"]) for d in world.decisions]
    keys += [prompt_key(r.prompt) for r in world.plus]
    apart = held_apart(keys, 0, float(HOLDOUT))
    rng = np.random.default_rng(SEED + 1)
    train_rows = [i for i, d in enumerate(world.decisions) if prompt_key(d["prompt"]) not in apart]
    shuffled = [world.scores[i]["score"] for i in train_rows]
    rng.shuffle(shuffled)
    scores = [dict(s) for s in world.scores[: len(world.decisions)]]
    for i, v in zip(train_rows, shuffled, strict=True):
        scores[i]["score"] = v
    _write_logs(world.root / "junk-logs", world.decisions, scores)
    plus_rows = [i for i, r in enumerate(world.plus) if prompt_key(r.prompt) not in apart]
    plus_scores = [world.plus[i].score for i in plus_rows]
    rng.shuffle(plus_scores)
    plus = list(world.plus)
    for i, v in zip(plus_rows, plus_scores, strict=True):
        plus[i] = replace(plus[i], score=v)
    write_outcomes(world.root / "junk-plus.jsonl", plus)
    out = world.root / "candidate-2"
    res = _run(
        "--logs",
        str(world.root / "junk-logs"),
        "--plus",
        str(world.root / "junk-plus.jsonl"),
        "--registry",
        str(world.registry),
        "--out",
        str(out),
        "--holdout",
        HOLDOUT,
        "--seed",
        "0",
    )
    assert res.exit_code == 0, res.output
    return json.loads((out / REPORT_JSON).read_text()), res.stdout


def test_retrain_refuses_a_candidate_trained_on_junk(
    world: World, first: dict[str, Any], second: tuple[dict[str, Any], str]
) -> None:
    report, text = second
    good = first["candidate"]["version"]
    assert report["promoted"] is False
    assert report["current"]["version"] == good
    assert report["reason"].startswith("not shown to be within the margins of the current model")
    assert "APGR gain on held-apart logs (DR)" in report["reason"]
    assert "lower end below -0.05" in report["reason"]
    dr = report["evaluation"]["logs"]["estimators"]["dr"]
    assert dr["apgr_gain"]["low"] < -0.05
    assert dr["candidate"]["apgr"] < dr["current"]["apgr"]
    # the held-apart share is the same as in the first run: only training data changed
    assert report["data"]["held_apart"] == first["data"]["held_apart"]
    junk = report["candidate"]["version"]
    assert text.startswith(f"KEEP CURRENT: {good} stays; candidate {junk} refused")
    assert "reason: not shown to be within the margins" in text
    registry = Registry(world.registry)
    assert registry.current_version() == good
    entry = registry.show(junk)
    assert entry.parent == good and entry.promoted == ()
    assert entry.metrics["retrain"]["promoted"] is False


def test_bad_arguments_fail_cleanly(world: World) -> None:
    logs = str(world.root / "logs")
    out = str(world.root / "never")
    res = _run("--logs", logs, "--out", out, "--since", "yesterday", "--current", "x")
    assert res.exit_code == 2 and "not a date" in res.output
    res = _run("--logs", logs, "--out", out, "--registry", str(world.registry), "--current", "x")
    assert res.exit_code == 2 and "not both" in res.output
    res = _run("--logs", logs, "--out", out)
    assert res.exit_code == 2 and "--registry DIR or --current MODEL_DIR" in res.output
    res = _run(
        "--logs", logs, "--out", out, "--current", str(world.root / "bad"), "--since", "2027-01-01"
    )
    assert res.exit_code == 2 and "no usable scored records since 2027-01-01" in res.output
    bad = str(world.root / "bad")
    res = _run("--logs", logs, "--out", bad, "--current", bad)
    assert res.exit_code == 2 and "is the current model's directory" in res.output
    assert not Path(out).exists()


def test_first_model_of_an_empty_registry_and_a_current_model_directory(world: World) -> None:
    """A registry with nothing promoted takes the candidate as its first version; with
    --current instead of a registry nothing is registered and the report says so."""
    small = world.root / "small-logs"
    n = 150 * REQUESTS_PER_PROMPT
    _write_logs(small, world.decisions[:n], world.scores[:n])
    registry = world.root / "empty-registry"
    out = world.root / "first-version"
    res = _run("--logs", str(small), "--registry", str(registry), "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["promoted"] is True
    assert report["reason"] == "no model was promoted before: the candidate is the first"
    assert report["current"]["version"] is None and report["gate"]["checks"] == []
    assert report["evaluation"]["logs"]["estimators"]["dr"]["candidate"]["apgr"] is not None
    reg = Registry(registry)
    assert reg.current_version() == report["candidate"]["version"]
    assert reg.show(reg.current_version() or "").parent is None

    out2 = world.root / "against-directory"
    res = _run("--logs", str(small), "--current", str(world.root / "bad"), "--out", str(out2))
    assert res.exit_code == 0, res.output
    report = json.loads((out2 / REPORT_JSON).read_text())
    assert report["current"] == {"version": world.bad_version, "model_dir": str(world.root / "bad")}
    assert "registry" not in report
    assert len(report["gate"]["checks"]) == 2
    if report["promoted"]:
        assert res.stdout.startswith("PROMOTE: ") and f"serve {out2} to put it in use" in res.stdout
    else:
        assert res.stdout.startswith(f"KEEP CURRENT: {world.bad_version} stays")
