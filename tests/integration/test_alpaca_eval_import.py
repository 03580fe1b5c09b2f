"""The AlpacaEval importer on the real files in ../shared/data, on small hand-made tables,
and through ``ttc-router data import alpaca-eval``."""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from classifier.importers import alpaca_eval as ae
from classifier.importers.zeroeval import default_data_dir
from classifier.jobs import SOURCES, import_source
from classifier.outcomes_io import OutcomeRecord, read_outcomes
from router.cli.main import app
from router.core.types import Price
from router.errors import InvalidRequest

DATA = default_data_dir()
ALPACA = DATA / "alpaca-eval"  # the public data, never copied into the repository
DATASETS = {"helpful_base", "koala", "oasst", "selfinstruct", "vicuna"}
HEADER = [
    "results_dir_model",
    "dataset",
    "row_index",
    "instruction_prefix200",
    "generator_1",
    "generator_2",
    "preference",
    "output_1_chars",
    "output_2_chars",
]
LENGTHS_HEADER = [
    "results_dir_model",
    "dataset",
    "row_index",
    "instruction_chars",
    "output_chars",
    "generator",
]


def _words(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


@pytest.fixture(scope="module")
def records() -> list[OutcomeRecord]:
    return ae.import_alpaca_eval(ALPACA)


def _table_rows() -> list[dict[str, str]]:
    with gzip.open(ALPACA / ae.PREFERENCES_FILE, "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_default_tiers_three_arms_full_information(records: list[OutcomeRecord]) -> None:
    arms = {f"{t}/greedy" for t in ae.DEFAULT_TIERS}
    assert len(records) == 2415
    by_prompt: dict[str, list[OutcomeRecord]] = defaultdict(list)
    for r in records:
        by_prompt[r.prompt_id].append(r)
    assert len(by_prompt) == 805
    assert all(sorted(x.arm for x in v) == sorted(arms) for v in by_prompt.values())
    assert {r.task for r in records} == DATASETS
    assert [(int(r.prompt_id.split("/")[1]), r.arm) for r in records] == sorted(
        (int(r.prompt_id.split("/")[1]), r.arm) for r in records
    )
    assert all(0.0 <= r.score <= 1.0 for r in records)
    assert sum(0.05 < r.score < 0.95 for r in records) > 200  # graded, not 0/1
    assert all(len(r.prompt) <= 200 for r in records)


def test_mean_scores_equal_the_table(records: list[OutcomeRecord]) -> None:
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for row in _table_rows():
        sums[row["results_dir_model"]] += float(row["preference"]) - 1.0
        counts[row["results_dir_model"]] += 1
    board = (
        ALPACA / "docs" / "data_AlpacaEval_2" / "weighted_alpaca_eval_gpt4_turbo_leaderboard.csv"
    )
    with board.open(encoding="utf-8", newline="") as handle:
        win_rate = {row["name"]: float(row["win_rate"]) for row in csv.DictReader(handle)}
    for tier, model in ae.DEFAULT_TIERS.items():
        mine = [r.score for r in records if r.arm == f"{tier}/greedy"]
        assert all(r.model == model for r in records if r.arm == f"{tier}/greedy")
        assert sum(mine) / len(mine) == pytest.approx(sums[model] / counts[model], abs=1e-12)
        assert sum(mine) / len(mine) == pytest.approx(win_rate[model] / 100, abs=1e-6)
    means = {a: sum(r.score for r in records if r.arm == a) / 805 for a in {r.arm for r in records}}
    assert means["tiny-1b/greedy"] < means["small-3b/greedy"] < means["mid-9b/greedy"]


def test_tokens_and_costs(records: list[OutcomeRecord]) -> None:
    for r in records:
        assert r.input_tokens and r.input_tokens >= 1
        assert r.output_tokens and r.output_tokens >= 1
        p = ae.DEFAULT_PRICES[r.arm.split("/")[0]]
        expected = (r.input_tokens * p.input_per_mtok + r.output_tokens * p.output_per_mtok) / 1e6
        assert r.cost_usd == pytest.approx(expected, abs=1e-12)
    out_tok: dict[str, set[int]] = defaultdict(set)
    in_tok: dict[str, set[int]] = defaultdict(set)
    for r in records:
        out_tok[r.prompt_id].add(r.output_tokens or 0)
        in_tok[r.prompt_id].add(r.input_tokens or 0)
    assert sum(len(v) > 1 for v in out_tok.values()) > 0.9 * 805
    assert all(len(v) == 1 for v in in_tok.values())
    # Input tokens come from the full instruction, not the 200-character prefix.
    cut = [r for r in records if len(r.prompt) == 200]
    assert cut and max(r.input_tokens or 0 for r in cut) > 3 * max(
        len(r.prompt.split()) for r in cut
    )


def test_other_tiers_and_errors() -> None:
    recs = import_source(
        "alpaca-eval",
        data_dir=DATA,
        tiers={"ref": "gpt4_1106_preview", "big": "claude-2"},
        prices={"ref": Price(10.0, 30.0), "big": Price(8.0, 24.0)},
    )
    assert "alpaca-eval" in SOURCES
    assert len(recs) == 1610 and {r.arm for r in recs} == {"ref/greedy", "big/greedy"}
    assert {r.score for r in recs if r.arm == "ref/greedy"} == {0.5}  # itself vs itself
    twice = ae.import_alpaca_eval(
        ALPACA, tiers={"v": "vicuna-13b-v1.5"}, prices={"v": Price(1, 1)}, count_tokens=_words
    )
    assert len(twice) == 1610 and len({r.prompt_id for r in twice}) == 805
    known = sorted({row["results_dir_model"] for row in _table_rows()})
    with pytest.raises(InvalidRequest, match="known models") as err:
        ae.import_alpaca_eval(
            ALPACA, tiers={"x": "gpt-5"}, prices={"x": Price(1, 1)}, count_tokens=_words
        )
    assert "['gpt-5']" in err.value.message and ", ".join(known) in err.value.message
    with pytest.raises(InvalidRequest, match=r"no prices given for tier\(s\) \['ref'\]"):
        ae.import_alpaca_eval(ALPACA, tiers={"ref": "gpt4_1106_preview"}, count_tokens=_words)
    # phi-2's annotation file lacks two instructions: its later row_index values are shifted.
    with pytest.raises(InvalidRequest, match=r"preferences\.csv\.gz:\d+: row_index \d+ of"):
        ae.import_alpaca_eval(
            ALPACA,
            tiers={"a": "gpt4_1106_preview", "b": "phi-2"},
            prices={"a": Price(1, 1), "b": Price(1, 1)},
            count_tokens=_words,
        )
    with pytest.raises(InvalidRequest, match="AlpacaEval data not found at"):
        ae.import_alpaca_eval(DATA / "no-such-dir", count_tokens=_words)


def _write(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _row(model: str, index: int, prompt: str, preference: str, out_chars: int) -> list[str]:
    return [
        model,
        "koala",
        str(index),
        prompt,
        "gpt4_1106_preview",
        model,
        preference,
        "9",
        str(out_chars),
    ]


def _small(root: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    _write(root / ae.PREFERENCES_FILE, header, rows)
    lengths = [
        ["m1", "koala", "0", "400", "0", "m1"],
        ["m2", "koala", "0", "400", "0", "m2"],
    ]
    _write(root / ae.LENGTHS_FILE, LENGTHS_HEADER, lengths)
    return root


def test_small_table_tokens_ratio_duplicates_and_gaps(tmp_path: Path) -> None:
    root = _small(
        tmp_path,
        [
            _row("m2", 1, "four five six seven", "1.25", 30),
            _row("m1", 0, "one two", "2", 0),
            _row("m2", 0, "one two", "1.0", 24),
            _row("m1", 1, "four five six seven", "", 30),  # not observed
            _row("m1", 1, "four five six seven", "1.5", 12),  # a second row for m1 at 1
            _row("other", 0, "eight", "1.5", 5),
        ],
    )
    tiers = {"b": "m2", "a": "m1"}
    recs = ae.import_alpaca_eval(
        root, tiers=tiers, prices={"a": Price(1.0, 2.0), "b": Price(3.0, 5.0)}, count_tokens=_words
    )
    ratio = (len("one two") + len("four five six seven") + len("eight")) / (2 + 4 + 1)
    assert ae.chars_per_token(["one two", "four five six seven", "eight"], _words) == ratio
    got = [(r.prompt_id, r.arm, r.score, r.input_tokens, r.output_tokens) for r in recs]
    assert got == [
        ("alpaca-eval/0", "a/greedy", 1.0, round(400 / ratio), 1),
        ("alpaca-eval/0", "b/greedy", 0.0, round(400 / ratio), round(24 / ratio)),
        ("alpaca-eval/1", "a/greedy", 0.5, round(19 / ratio), round(12 / ratio)),
        ("alpaca-eval/1", "b/greedy", 0.25, round(19 / ratio), round(30 / ratio)),
    ]
    b1 = recs[3]
    assert b1.cost_usd == pytest.approx((round(19 / ratio) * 3.0 + round(30 / ratio) * 5.0) / 1e6)
    assert b1.task == "koala" and b1.model == "m2" and b1.prompt == "four five six seven"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (
            [_row("m1", 0, "hi", "1.5", 3), _row("m1", 1, "yo", "abc", 3)],
            r"alpaca_eval_weighted_gpt4turbo_preferences\.csv\.gz:3: preference 'abc' is not a",
        ),
        (  # a quoted prompt over two lines: the bad row starts on line 4
            [_row("m1", 0, "hi\nthere", "1.5", 3), _row("m1", 1, "yo", "2.5", 3)],
            r"preferences\.csv\.gz:4: preference '2\.5' is outside \[1, 2\]",
        ),
        (
            [_row("m1", 0, "hi", "1.5", 3), _row("m1", 1, "yo", "1.5", -3)],
            r"preferences\.csv\.gz:3: output_2_chars '-3' is not a non-negative integer",
        ),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, rows: list[list[str]], message: str) -> None:
    root = _small(tmp_path, rows)
    with pytest.raises(InvalidRequest, match=message):
        ae.import_alpaca_eval(
            root, tiers={"a": "m1"}, prices={"a": Price(1, 1)}, count_tokens=_words
        )


def test_missing_column_and_missing_file(tmp_path: Path) -> None:
    header = [c for c in HEADER if c != "output_2_chars"]
    root = _small(tmp_path, [_row("m1", 0, "hi", "1.5", 3)[:-1]], header)
    with pytest.raises(
        InvalidRequest, match=r"preferences\.csv\.gz:1: missing column\(s\) \['output_2_chars'\]"
    ):
        ae.import_alpaca_eval(
            root, tiers={"a": "m1"}, prices={"a": Price(1, 1)}, count_tokens=_words
        )
    root = _small(tmp_path / "b", [_row("m1", 0, "hi", "1.5", 3)])
    (root / ae.LENGTHS_FILE).unlink()
    with pytest.raises(
        InvalidRequest, match=r"AlpacaEval table not found at .*model_output_lengths\.csv\.gz"
    ):
        ae.import_alpaca_eval(
            root, tiers={"a": "m1"}, prices={"a": Price(1, 1)}, count_tokens=_words
        )


def test_cli_import(tmp_path: Path, records: list[OutcomeRecord]) -> None:
    out = tmp_path / "alpaca.jsonl"
    res = CliRunner().invoke(
        app, ["data", "import", "alpaca-eval", "--out", str(out), "--data", str(DATA)]
    )
    assert res.exit_code == 0, res.output
    assert "wrote 2415 records (805 prompts)" in res.output
    assert "mid-9b/greedy" in res.output and "tiny-1b/greedy" in res.output
    assert read_outcomes(out) == records
