"""The generic score-table importer: CSV and JSON Lines, costs, and errors with file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from classifier.importers.table import import_table
from router.core.types import Price
from router.errors import InvalidRequest


def _count(texts: list[str]) -> list[int]:
    return [len(t.split()) for t in texts]


def test_csv_with_cost_columns(tmp_path: Path) -> None:
    path = tmp_path / "scores.csv"
    path.write_text(
        "prompt_id,prompt,task,small/greedy,small/vote@5,small/vote@5:cost_usd,small/greedy:cost_usd\n"
        "a,What is 2+2?,math,1,1,0.0005,0.0001\n"
        "b,Name a prime,math,0.25,,0.0004,0.0001\n",
        encoding="utf-8",
    )
    recs = import_table(path, count_tokens=_count)
    assert [(r.prompt_id, r.arm, r.score, r.cost_usd) for r in recs] == [
        ("a", "small/greedy", 1.0, 0.0001),
        ("a", "small/vote@5", 1.0, 0.0005),
        ("b", "small/greedy", 0.25, 0.0001),
    ]
    assert recs[0].task == "math"


def test_jsonl_with_prices_and_tokens(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    rows = [
        {"prompt": "one two three", "a/greedy": 0.5, "a/greedy:output_tokens": 100},
        {"prompt": "four", "a/greedy": 1, "a/greedy:output_tokens": 10},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    recs = import_table(path, prices={"a": Price(1.0, 2.0)}, count_tokens=_count)
    assert recs[0].prompt_id == "scores/1" and recs[1].prompt_id == "scores/2"
    assert recs[0].cost_usd == pytest.approx((3 * 1.0 + 100 * 2.0) / 1e6)
    assert recs[0].input_tokens == 3 and recs[0].output_tokens == 100


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "question,a/greedy,a/greedy:cost_usd\nhi,1,0.1\n",
            r"scores\.csv:\d+: required column 'prompt'",
        ),
        (
            "prompt,a/greedy,a/greedy:cost_usd\nhi,1,0.1\nyo,high,0.1\n",
            r"scores\.csv:3: score of 'a/greedy' must be a number",
        ),
        (
            "prompt,a/greedy,a/greedy:cost_usd\nhi,nan,0.1\n",
            r"scores\.csv:2: score of 'a/greedy' must be a finite number",
        ),
        ("prompt,a/greedy\nhi,1\n", r"scores\.csv:2: arm 'a/greedy' has no 'a/greedy:cost_usd'"),
        ("prompt,notes\nhi,x\n", r"scores\.csv:\d+: no arm score columns"),
    ],
)
def test_bad_tables_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "scores.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InvalidRequest, match=message):
        import_table(path, count_tokens=_count)


def test_requested_arm_column_missing(tmp_path: Path) -> None:
    path = tmp_path / "scores.jsonl"
    path.write_text(json.dumps({"prompt": "x", "a/greedy": 1, "a/greedy:cost_usd": 0}) + "\n")
    with pytest.raises(
        InvalidRequest, match=r"scores\.jsonl:1: score column 'b/greedy' is missing"
    ):
        import_table(path, arms=["a/greedy", "b/greedy"], count_tokens=_count)
