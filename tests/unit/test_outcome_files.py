"""Outcome files in either of the spec's formats (JSON Lines, Parquet with the same columns),
and files that are neither."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from classifier.importers.table import import_table
from classifier.jobs import read_prompts
from classifier.outcomes_io import is_parquet, read_outcomes
from router.errors import InvalidRequest

RECORDS = [
    {
        "prompt_id": "p1",
        "prompt": "What is 2+2?",
        "arm": "a/greedy",
        "score": 1.0,
        "cost_usd": 0.001,
        "output_tokens": 12,
        "task": "math",
    },
    {
        "prompt_id": "p1",
        "prompt": "What is 2+2?",
        "arm": "b/vote@3",
        "score": 0.5,
        "cost_usd": 0.004,
        "output_tokens": 40,
        "task": "math",
    },
    {
        "prompt_id": "p2",
        "prompt": "Name a colour.",
        "arm": "a/greedy",
        "score": 0.0,
        "cost_usd": 0.0,
    },
]


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_parquet_reads_as_the_same_records(tmp_path: Path) -> None:
    want = read_outcomes(_jsonl(tmp_path / "r.jsonl", RECORDS))
    # As a data frame writes it: every column in every row, nulls where a record has none,
    # the token counts a float column (an integer column with gaps).
    columns = sorted({k for r in RECORDS for k in r})
    table = pa.table(
        {
            c: [
                (float(r[c]) if c == "output_tokens" else r[c]) if c in r else None  # type: ignore[arg-type]
                for r in RECORDS
            ]
            for c in columns
        }
    )
    assert table.schema.field("output_tokens").type == pa.float64()
    pq.write_table(table, tmp_path / "r.parquet")
    got = read_outcomes(tmp_path / "r.parquet")
    assert got == want
    assert got[2].output_tokens is None and got[2].task is None
    # found by its magic bytes too, whatever its name
    (tmp_path / "r.parquet").rename(tmp_path / "renamed.data")
    assert is_parquet(tmp_path / "renamed.data")
    assert read_outcomes(tmp_path / "renamed.data") == want
    assert read_prompts(tmp_path / "renamed.data") == (
        ["p1", "p2"],
        [RECORDS[0]["prompt"], RECORDS[2]["prompt"]],
    )


def test_integer_prompt_ids_and_timestamps(tmp_path: Path) -> None:
    rows = [{**r, "prompt_id": i} for i, r in enumerate(RECORDS[:2], start=7)]
    stamp = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
    table = pa.Table.from_pylist([{**r, "ts": stamp} for r in rows])
    pq.write_table(table, tmp_path / "t.parquet")
    got = read_outcomes(tmp_path / "t.parquet")
    assert [r.prompt_id for r in got] == ["7", "8"]
    assert got[0].ts == stamp.isoformat()
    assert [r.prompt_id for r in read_outcomes(_jsonl(tmp_path / "t.jsonl", rows))] == ["7", "8"]


def test_parquet_rows_are_checked_like_lines(tmp_path: Path) -> None:
    rows = [RECORDS[0], {**RECORDS[1], "score": float("inf")}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "bad.parquet")
    with pytest.raises(InvalidRequest, match=r"bad\.parquet:2: field 'score' must be a number"):
        read_outcomes(tmp_path / "bad.parquet")
    pq.write_table(
        pa.Table.from_pylist([{**RECORDS[0], "output_tokens": 2.5}]), tmp_path / "f.parquet"
    )
    with pytest.raises(
        InvalidRequest, match=r"f\.parquet:1: field 'output_tokens' must be an integer"
    ):
        read_outcomes(tmp_path / "f.parquet")


def test_files_that_are_neither_format_get_a_clear_error(tmp_path: Path) -> None:
    binary = tmp_path / "model.jsonl"
    binary.write_bytes(_jsonl(tmp_path / "ok.jsonl", RECORDS[:1]).read_bytes() + b"\xd2\xff\x00\n")
    with pytest.raises(InvalidRequest, match=r"model\.jsonl:2: not UTF-8 text"):
        read_outcomes(binary)
    fake = tmp_path / "fake.parquet"
    fake.write_text("prompt_id,prompt\n", encoding="utf-8")
    with pytest.raises(InvalidRequest, match=r"fake\.parquet: not a readable Parquet file"):
        read_outcomes(fake)
    with pytest.raises(InvalidRequest, match=r"missing\.parquet: cannot open"):
        read_outcomes(tmp_path / "missing.parquet")
    latin = tmp_path / "table.csv"
    latin.write_bytes("prompt,a/greedy\nna\u00efve,1\n".encode("latin-1"))
    with pytest.raises(InvalidRequest, match=r"table\.csv:2: not UTF-8 text"):
        import_table(latin, prices=None)


def test_a_score_table_in_parquet(tmp_path: Path) -> None:
    rows = [
        {"prompt_id": "q1", "prompt": "hi", "a/greedy": 1.0, "a/greedy:cost_usd": 0.01},
        {"prompt_id": "q2", "prompt": "yo", "a/greedy": 0.0, "a/greedy:cost_usd": 0.02},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "scores.parquet")
    got = import_table(tmp_path / "scores.parquet")
    assert [(r.prompt_id, r.arm, r.score, r.cost_usd) for r in got] == [
        ("q1", "a/greedy", 1.0, 0.01),
        ("q2", "a/greedy", 0.0, 0.02),
    ]


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path: Path) -> None:
    # spreadsheet programs save "CSV UTF-8" with one
    csv_file = tmp_path / "excel.csv"
    csv_file.write_bytes(b"\xef\xbb\xbfprompt_id,prompt,a/greedy,a/greedy:cost_usd\nq1,hi,1,0.5\n")
    assert [(r.prompt_id, r.score) for r in import_table(csv_file)] == [("q1", 1.0)]
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + json.dumps(RECORDS[0]).encode() + b"\n")
    assert read_outcomes(jsonl)[0].prompt_id == "p1"


def test_a_prompt_id_with_two_texts_is_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from classifier.jobs import read_many

    same = _jsonl(tmp_path / "same.jsonl", RECORDS)
    with caplog.at_level("WARNING"):
        read_many([same])
    assert "prompt text" not in caplog.text
    templated = [RECORDS[0], {**RECORDS[1], "prompt": "<|user|>What is 2+2?"}, RECORDS[2]]
    with caplog.at_level("WARNING"):
        read_many([_jsonl(tmp_path / "templated.jsonl", templated)])
    assert "templated.jsonl: 1 prompt id(s) carry more than one prompt text" in caplog.text
    assert "'p1'" in caplog.text
