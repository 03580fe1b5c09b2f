"""The outcome log's pieces without Redis: schema mapping, day partitioning, dedup, spill
file, reading every file generation back, and ``outcomes export``."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, cast

import pyarrow.parquet as pq
import redis.exceptions
from typer.testing import CliRunner

from router.cli.main import app
from router.outcomes.jsonl_sink import JsonlOutcomeSink
from router.outcomes.logs import read_logs
from router.outcomes.parquet_sink import (
    DECISION_COLUMNS,
    Entry,
    ParquetDrain,
    arrow_schema,
    read_part,
    record_from_row,
    row_from_record,
    write_part,
)
from router.outcomes.redis_stream import RedisStreamOutcomeSink, stream_fields

TS = "2026-03-04T05:06:07.123456+00:00"


def decision(did: str, *, ts: str = TS, **over: Any) -> dict[str, Any]:
    """A record as ``RouterCore._record`` writes it."""
    rec: dict[str, Any] = {
        "prompt_id": f"req-{did}",
        "prompt": "What is 17*23? — «quoted»",
        "arm": "local-7b/vote@5",
        "score": None,
        "cost_usd": 0.00042,
        "task": "traffic",
        "input_tokens": 12,
        "output_tokens": 80,
        "latency_ms": 123.456,
        "propensity": 0.9,
        "explored": False,
        "request_id": f"req-{did}",
        "tenant": "alpha",
        "ts": ts,
        "model": "demo-7b",
        "decision_id": did,
        "tier": "local-7b",
        "strategy": "vote@5",
        "samples": 5,
        "usage_estimated": False,
        "detail": {"votes": {"391": 4, "390": 1}, "early_stop": True},
        "partial_output_tokens": 0,
        "fallback_from": None,
        "fallback_reason": None,
        "predicted_p_success": 0.8,
        "predicted_cost_usd": 0.0004,
        "reserved_cost_usd": 0.001,
        "model_version": "v3",
        "error": None,
        "usage_by_tier": [
            {"tier": "local-7b", "input_tokens": 12, "output_tokens": 80, "samples": 5}
        ],
    }
    rec.update(over)
    return rec


def score(did: str, value: float, ts: str) -> dict[str, Any]:
    return {"decision_id": did, "tenant": "alpha", "score": value, "ts": ts}


def entry(n: int, kind: str, record: dict[str, Any], *, ms: int = 1_772_600_000_000) -> Entry:
    return Entry(f"{ms + n}-0", stream_fields(kind, record))  # type: ignore[arg-type]


def drain(directory: Path, consumer: str = "c1") -> ParquetDrain:
    return ParquetDrain(cast(Any, None), directory, consumer=consumer)


def parquet_ids(directory: Path, kind: str = "decisions") -> list[str]:
    ids: list[str] = []
    for part in sorted((directory / kind).glob("day=*/part-*.parquet")):
        ids += pq.read_table(part, columns=["decision_id"]).column(0).to_pylist()
    return ids


# ---- schema -----------------------------------------------------------------------------
def test_a_service_record_round_trips_through_a_row_with_nested_values_as_json() -> None:
    rec = decision("d1")
    row = row_from_record("decision", rec)
    assert row["extra"] is None
    assert json.loads(row["detail"]) == rec["detail"]
    assert json.loads(row["usage_by_tier"]) == rec["usage_by_tier"]
    assert record_from_row("decision", row) == rec


def test_unknown_fields_and_misfit_values_go_to_extra_and_come_back() -> None:
    rec = decision("d1", input_tokens="12", shadow_arm="b/greedy", samples=2**70)
    del rec["usage_by_tier"]
    row = row_from_record("decision", rec)
    assert row["input_tokens"] is None and row["samples"] is None
    assert json.loads(row["extra"]) == {
        "input_tokens": "12",
        "shadow_arm": "b/greedy",
        "samples": 2**70,
    }
    assert row["usage_by_tier"] is None
    assert record_from_row("decision", row) == rec


def test_the_arrow_schema_has_every_column_then_extra(tmp_path: Path) -> None:
    schema = arrow_schema("decision")
    assert schema.names == [name for name, _ in DECISION_COLUMNS] + ["extra"]
    assert str(schema.field("input_tokens").type) == "int64"
    assert str(schema.field("usage_estimated").type) == "bool"
    part = tmp_path / "decisions" / "day=2026-03-04" / "part-x-1.parquet"
    records = [decision("a"), decision("b", cost_usd=1, detail={})]
    write_part(part, "decision", records)
    table = pq.read_table(part, partitioning=None)
    assert table.schema.names == schema.names
    assert table.schema.metadata[b"ttc.kind"] == b"decision"
    back = read_part(part, "decision")
    assert back[0] == records[0]
    assert back[1]["cost_usd"] == 1.0 and back[1]["detail"] == {}
    assert [p.name for p in part.parent.iterdir()] == [part.name]  # no temp file left


# ---- batches: day partitioning and dedup --------------------------------------------------
def test_records_go_to_the_utc_day_of_their_ts_or_else_of_the_stream_entry(
    tmp_path: Path,
) -> None:
    late_local = "2026-03-05T01:30:00+02:00"  # 2026-03-04 23:30 UTC
    no_ts = decision("c")
    del no_ts["ts"]
    ms = int(datetime(2026, 2, 1, 12, tzinfo=UTC).timestamp() * 1000)
    entries = [
        entry(0, "decision", decision("a")),
        entry(1, "decision", decision("b", ts=late_local)),
        entry(2, "decision", no_ts, ms=ms),
        entry(3, "decision", decision("d", ts="2026-03-06T00:00:00+00:00")),
        entry(4, "score", score("a", 1.0, "2026-03-07T00:00:01+00:00")),
    ]
    stats = drain(tmp_path).write_batch(entries)
    assert stats.written == 5 and stats.duplicates == 0
    days = {p.parent.name for p in (tmp_path / "decisions").glob("day=*/part-*.parquet")}
    assert days == {"day=2026-03-04", "day=2026-02-01", "day=2026-03-06"}
    day4 = next((tmp_path / "decisions" / "day=2026-03-04").glob("part-c1-*.parquet"))
    assert sorted(r["decision_id"] for r in read_part(day4, "decision")) == ["a", "b"]
    assert (tmp_path / "scores" / "day=2026-03-07").is_dir()


def test_a_decision_already_in_a_part_file_is_skipped_in_the_batch_and_across_consumers(
    tmp_path: Path,
) -> None:
    first = drain(tmp_path, "c1")
    s1 = first.write_batch(
        [entry(0, "decision", decision("a")), entry(1, "decision", decision("a"))]
    )
    assert (s1.written, s1.duplicates) == (1, 1)
    s2 = first.write_batch(
        [entry(2, "decision", decision("a")), entry(3, "decision", decision("b"))]
    )
    assert (s2.written, s2.duplicates) == (1, 1)
    # A second consumer (or a restarted one) learns the ids from the files on disk.
    other = drain(tmp_path, "c2")
    s3 = other.write_batch(
        [entry(4, "decision", decision("b")), entry(5, "decision", decision("c"))]
    )
    assert (s3.written, s3.duplicates) == (1, 1)
    # ...and the first one sees what the second wrote.
    s4 = first.write_batch([entry(6, "decision", decision("c"))])
    assert (s4.written, s4.duplicates, s4.parts) == (0, 1, [])
    assert sorted(parquet_ids(tmp_path)) == ["a", "b", "c"]


def test_scores_are_deduplicated_by_decision_id_and_ts(tmp_path: Path) -> None:
    d = drain(tmp_path)
    t1, t2 = "2026-03-04T06:00:00+00:00", "2026-03-04T07:00:00+00:00"
    stats = d.write_batch(
        [
            entry(0, "score", score("a", 0.0, t1)),
            entry(1, "score", score("a", 1.0, t2)),
            entry(2, "score", score("a", 0.0, t1)),
        ]
    )
    assert (stats.written, stats.duplicates) == (2, 1)
    again = drain(tmp_path, "c2").write_batch([entry(3, "score", score("a", 1.0, t2))])
    assert again.duplicates == 1 and again.written == 0


def test_unreadable_and_trimmed_entries_are_kept_in_the_rejected_file(tmp_path: Path) -> None:
    stats = drain(tmp_path).write_batch(
        [
            Entry("1-0", {b"kind": b"decision", b"id": b"x", b"record": b"{not json"}),
            Entry("2-0", {}),
            Entry("3-0", {b"kind": b"other", b"record": b"{}"}),
            entry(4, "decision", decision("ok")),
        ]
    )
    assert (stats.written, stats.rejected) == (1, 3)
    lines = [json.loads(x) for x in (tmp_path / "rejected" / "c1.jsonl").read_text().splitlines()]
    assert [x["entry_id"] for x in lines] == ["1-0", "2-0", "3-0"]
    assert lines[0]["fields"]["record"] == "{not json"
    assert "trimmed" in lines[1]["why"]


def test_a_restarted_drain_removes_its_own_and_abandoned_temporary_files(tmp_path: Path) -> None:
    folder = tmp_path / "decisions" / "day=2026-03-04"
    folder.mkdir(parents=True)
    mine = folder / ".part-c1-0000000000001.parquet.tmp"
    theirs = folder / ".part-c2-0000000000001.parquet.tmp"
    abandoned = folder / ".part-c3-0000000000001.parquet.tmp"
    for p in (mine, theirs, abandoned):
        p.write_bytes(b"half")
    two_hours_ago = time.time() - 7200
    os.utime(abandoned, (two_hours_ago, two_hours_ago))
    drain(tmp_path, "c1").remove_stale_temp_files()
    assert not mine.exists() and theirs.exists() and not abandoned.exists()
    assert read_logs(tmp_path) == []


# ---- the stream sink's spill file ----------------------------------------------------------
class FlakyRedis:
    """Fails every XADD while ``down``; otherwise keeps the entries."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0
        self.entries: list[dict[str, str]] = []

    async def xadd(self, name: str, fields: dict[str, str], **kw: Any) -> bytes:
        self.calls += 1
        if self.down:
            raise redis.exceptions.ConnectionError("Connection refused")
        assert kw == {"maxlen": 1000, "approximate": True}
        self.entries.append(fields)
        return b"1-0"


async def test_a_failed_xadd_spills_the_record_and_read_logs_finds_it(tmp_path: Path) -> None:
    client = FlakyRedis()
    now = [datetime(2026, 3, 4, 9, tzinfo=UTC).timestamp()]
    sink = RedisStreamOutcomeSink(
        cast(Any, client),
        outcomes_dir=tmp_path,
        maxlen=1000,
        retry_after_s=60.0,
        clock=lambda: now[0],
    )
    await sink.write_decision(decision("a"))
    await sink.write_score("a", "alpha", 0.75)
    assert client.calls == 1  # the score went straight to the spill file
    spilled = sorted(p.name.split(".")[0] for p in (tmp_path / "spill").iterdir())
    assert spilled == ["decisions-2026-03-04", "scores-2026-03-04"]
    [rec] = read_logs(tmp_path)
    assert (
        rec["decision_id"] == "a"
        and rec["score"] == 0.75
        and rec["detail"] == decision("a")["detail"]
    )


async def test_the_sink_tries_redis_again_after_retry_after_s(tmp_path: Path) -> None:
    client = FlakyRedis()
    sink = RedisStreamOutcomeSink(
        cast(Any, client), outcomes_dir=tmp_path, maxlen=1000, retry_after_s=0.0
    )
    await sink.write_decision(decision("a"))
    client.down = False
    await sink.write_decision(decision("b"))
    assert client.calls == 2
    [fields] = client.entries
    assert fields["kind"] == "decision" and fields["id"] == "b"
    assert json.loads(fields["record"]) == decision("b")


# ---- reading every generation back -----------------------------------------------------------
async def test_read_logs_joins_parquet_spill_and_jsonl_once_each_with_the_latest_score(
    tmp_path: Path,
) -> None:
    d = drain(tmp_path)
    d.write_batch(
        [
            entry(0, "decision", decision("a")),
            entry(1, "decision", decision("b", ts="2026-03-02T00:00:00+00:00")),
            entry(2, "score", score("a", 0.2, "2026-03-04T07:00:00+00:00")),
            entry(3, "score", score("a", 0.9, "2026-03-04T09:00:00+00:00")),
        ]
    )
    # the spill file repeats "a" (an XADD that timed out but was applied) and adds "c"
    client = FlakyRedis()
    spill = RedisStreamOutcomeSink(cast(Any, client), outcomes_dir=tmp_path, retry_after_s=60)
    await spill.write_decision(decision("a", prompt="spilled copy"))
    await spill.write_decision(decision("c", ts="2026-03-05T00:00:00+00:00"))
    # an older JSON Lines log repeats "b", adds "d", and an older score of "a"
    legacy = JsonlOutcomeSink(
        tmp_path, fsync=False, clock=lambda: datetime(2026, 3, 4, 8, tzinfo=UTC).timestamp()
    )
    await legacy.write_decision(decision("b", prompt="legacy copy", ts="2026-03-02T00:00:00+00:00"))
    await legacy.write_decision(decision("d", ts="2026-03-01T00:00:00+00:00"))
    await legacy.write_score("a", "alpha", 0.5)
    await legacy.write_score("d", "alpha", 1.0)

    records = read_logs(tmp_path)
    assert [r["decision_id"] for r in records] == ["d", "b", "a", "c"]  # by ts
    by_id = {r["decision_id"]: r for r in records}
    assert by_id["a"]["score"] == 0.9  # the 09:00 score beats 07:00 and the legacy 08:00
    assert by_id["a"]["prompt"] == decision("a")["prompt"]  # the Parquet copy wins
    assert by_id["b"]["prompt"] == decision("b")["prompt"]
    assert by_id["c"]["score"] is None and by_id["d"]["score"] == 1.0

    assert [r["decision_id"] for r in read_logs(tmp_path, scored_only=True)] == ["d", "a"]
    recent = read_logs(tmp_path, since=date(2026, 3, 4))
    assert [r["decision_id"] for r in recent] == ["a", "c"]


async def test_export_writes_the_joined_records_as_json_lines(tmp_path: Path) -> None:
    drain(tmp_path).write_batch(
        [
            entry(0, "decision", decision("a")),
            entry(1, "decision", decision("b")),
            entry(2, "score", score("b", 1.0, "2026-03-04T09:00:00+00:00")),
        ]
    )
    out = tmp_path / "export" / "train.jsonl"
    runner = CliRunner()
    result = runner.invoke(app, ["outcomes", "export", "--dir", str(tmp_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 2 record(s) (1 scored)" in result.output
    lines = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [x["decision_id"] for x in lines] == ["a", "b"]
    assert lines[1]["score"] == 1.0 and lines[0]["prompt"] == decision("a")["prompt"]
    result = runner.invoke(
        app, ["outcomes", "export", "--dir", str(tmp_path), "--out", str(out), "--scored-only"]
    )
    assert result.exit_code == 0 and len(out.read_text().splitlines()) == 1
    bad = runner.invoke(
        app, ["outcomes", "export", "--dir", str(tmp_path), "--out", str(out), "--since", "May"]
    )
    assert bad.exit_code == 2


def test_read_logs_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert read_logs(tmp_path / "nothing") == []


def test_a_torn_last_jsonl_line_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "decisions-2026-03-04.h-1.jsonl").write_text(
        json.dumps(decision("a")) + "\n" + '{"decision_id": "b", "prom'
    )
    assert [r["decision_id"] for r in read_logs(tmp_path)] == ["a"]
