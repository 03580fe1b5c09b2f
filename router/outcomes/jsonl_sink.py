"""Outcome records as JSON Lines, one file per UTC day and process.

``decisions-YYYY-MM-DD.<host>-<pid>.jsonl`` holds one record per finished (or failed)
request in the format of ``spec/outcomes.md`` plus the decision's own fields, with
``score: null`` until a score arrives. ``scores-YYYY-MM-DD.<host>-<pid>.jsonl`` holds the
scores sent later through ``RecordOutcome``; ``read_outcomes`` joins the two by decision id.
One file per process keeps replicas from interleaving partial lines.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class JsonlOutcomeSink:
    """Appends records with a flush per line (and an fsync, unless ``fsync=False``)."""

    def __init__(
        self, directory: Path, *, fsync: bool = True, clock: Callable[[], float] = time.time
    ) -> None:
        self.directory = directory
        self.fsync = fsync
        self.clock = clock
        self._lock = asyncio.Lock()
        self._suffix = f"{socket.gethostname()}-{os.getpid()}"
        directory.mkdir(parents=True, exist_ok=True)

    def _path(self, kind: str) -> Path:
        day = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d")
        return self.directory / f"{kind}-{day}.{self._suffix}.jsonl"

    def _append(self, path: Path, line: str) -> None:
        with path.open("a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())

    async def _write(self, kind: str, record: Mapping[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        async with self._lock:
            await asyncio.to_thread(self._append, self._path(kind), line)

    async def write_decision(self, record: Mapping[str, Any]) -> None:
        await self._write("decisions", record)

    async def write_score(self, decision_id: str, tenant: str, score: float) -> None:
        ts = datetime.fromtimestamp(self.clock(), UTC).isoformat()
        await self._write(
            "scores", {"decision_id": decision_id, "tenant": tenant, "score": score, "ts": ts}
        )


def _lines(paths: list[Path]) -> Iterator[dict[str, Any]]:
    for p in sorted(paths):
        with p.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)


def read_outcomes(directory: Path, *, scored_only: bool = False) -> Iterator[dict[str, Any]]:
    """Decision records with the latest score attached (``score`` stays None when unscored)."""
    scores: dict[str, float] = {}
    for s in _lines(list(directory.glob("scores-*.jsonl"))):
        scores[s["decision_id"]] = float(s["score"])
    for rec in _lines(list(directory.glob("decisions-*.jsonl"))):
        if rec.get("decision_id") in scores:
            rec["score"] = scores[rec["decision_id"]]
        if scored_only and rec.get("score") is None:
            continue
        yield rec
