"""Read the outcome log back: every decision once, with its latest score.

An outcomes directory may hold three generations of files, all read together:

* Parquet parts written by the drain: ``decisions/day=…/part-*.parquet`` and
  ``scores/day=…/part-*.parquet`` (see ``router.outcomes.parquet_sink``);
* spill files of ``RedisStreamOutcomeSink``: ``spill/decisions-*.jsonl``,
  ``spill/scores-*.jsonl``;
* JSON Lines files of ``JsonlOutcomeSink``: ``decisions-*.jsonl``, ``scores-*.jsonl``.

A decision that appears more than once (a spilled ``XADD`` that Redis had applied after
all, a record in two generations) is returned once, the Parquet copy first.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from router.outcomes.parquet_sink import day_folders, part_files, read_part
from router.outcomes.redis_stream import SPILL_DIR, Kind, parse_ts

log = logging.getLogger("ttc_router.outcomes")

_FILE_DAY = re.compile(r"^(?:decisions|scores)-(\d{4}-\d{2}-\d{2})")
_OLDEST = datetime.min.replace(tzinfo=UTC)


def _jsonl_files(folder: Path, kind: Kind, since: date | None) -> list[Path]:
    """JSON Lines files of a kind in ``folder``; with ``since``, those whose name's day is at
    most one day before it (a record's own day may differ from its file's near midnight)."""
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.glob(f"{kind}s-*.jsonl")):
        m = _FILE_DAY.match(p.name)
        if since is not None and m is not None:
            try:
                if date.fromisoformat(m.group(1)) < since - timedelta(days=1):
                    continue
            except ValueError:
                pass
        out.append(p)
    return out


def _jsonl_records(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                log.warning("skipping unreadable line %d of %s", n, path)
                continue
            if isinstance(rec, dict):
                yield rec


def _in_range(rec: dict[str, Any], since: date | None) -> bool:
    if since is None:
        return True
    ts = parse_ts(rec.get("ts"))
    return ts is None or ts.date() >= since


def iter_records(
    directory: Path, kind: Kind, since: date | None = None
) -> Iterator[dict[str, Any]]:
    """Every record of a kind in ``directory``: Parquet parts, then spill files, then
    JSON Lines files; duplicates included."""
    for _, folder in day_folders(directory, kind, since):
        for part in part_files(folder):
            yield from read_part(part, kind)
    for folder in (directory / SPILL_DIR, directory):
        for path in _jsonl_files(folder, kind, since):
            yield from (r for r in _jsonl_records(path) if _in_range(r, since))


def latest_scores(directory: Path, since: date | None = None) -> dict[str, float]:
    """Decision id -> its latest score (by the score's ``ts``; later files win ties)."""
    best: dict[str, tuple[datetime, float]] = {}
    for s in iter_records(directory, "score", since):
        did, value = s.get("decision_id"), s.get("score")
        if not did or value is None:
            continue
        ts = parse_ts(s.get("ts")) or _OLDEST
        if did not in best or ts >= best[did][0]:
            best[did] = (ts, float(value))
    return {did: v for did, (_, v) in best.items()}


def read_logs(
    directory: Path, *, since: date | None = None, scored_only: bool = False
) -> list[dict[str, Any]]:
    """Decision records from every file generation under ``directory`` (see the module
    docstring), each decision id once, with ``score`` set to its latest score (None when
    unscored), ordered by ``ts``.

    ``since`` keeps decisions from that UTC day on; ``scored_only`` drops unscored ones.
    Records without a ``decision_id`` are kept as they are.
    """
    scores = latest_scores(directory, since)
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for rec in iter_records(directory, "decision", since):
        did = rec.get("decision_id")
        if did:
            if did in seen:
                continue
            seen.add(did)
            if did in scores:
                rec["score"] = scores[did]
        rec.setdefault("score", None)
        if scored_only and rec["score"] is None:
            continue
        out.append(rec)
    out.sort(key=lambda r: (parse_ts(r.get("ts")) or _OLDEST, str(r.get("decision_id") or "")))
    return out
