"""Outcome records on a Redis Stream, with a local spill file for when Redis cannot be reached.

Every decision and every score becomes one stream entry with three fields::

    kind    "decision" or "score"
    id      the decision id
    record  the record as compact JSON (a decision: the fields ``RouterCore`` logs; a score:
            ``decision_id``, ``tenant``, ``score``, ``ts``)

The stream is capped at about ``maxlen`` entries (``XADD MAXLEN ~``) so that it cannot
grow without bound while no sink drains it; ``ttc-router outcomes sink`` (or the drain task
inside the server) moves entries into Parquet files long before that.

When an ``XADD`` fails, the record is not lost: it is appended (flushed and fsynced) to a
JSON Lines spill file in ``<outcomes_dir>/spill/``, named like the files of ``JsonlOutcomeSink``
(``decisions-YYYY-MM-DD.<host>-<pid>.jsonl``, ``scores-…``; the day is the record's own UTC
day), and a warning is logged. ``router.outcomes.logs.read_logs`` reads spill files beside
the Parquet parts and removes the duplicates a timed-out but applied ``XADD`` can leave.
After a failure the sink writes straight to the spill file for ``retry_after_s`` before it
tries Redis again, so requests do not each wait for Redis to time out.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import Counter

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger("ttc_router.outcomes")

Kind = Literal["decision", "score"]
KINDS: tuple[Kind, ...] = ("decision", "score")
SPILL_DIR = "spill"
STREAM_MAXLEN = 1_000_000
"""Default cap on the stream's length (approximate, as ``XADD MAXLEN ~`` trims)."""

OUTCOMES_SPILLED = Counter(
    "ttc_outcomes_spilled_total",
    "Outcome records written to the local spill file because Redis could not take them",
    ["kind"],
)


def dumps(value: Any) -> str:
    """Compact JSON, non-ASCII text kept as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def stream_fields(kind: Kind, record: Mapping[str, Any]) -> dict[str, str]:
    """The stream entry of one record (see the module docstring)."""
    return {"kind": kind, "id": str(record.get("decision_id") or ""), "record": dumps(record)}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def parse_fields(fields: Mapping[Any, Any]) -> tuple[Kind, dict[str, Any]]:
    """The kind and record of a stream entry; ``ValueError`` when the entry is not one."""
    named = {_text(k): _text(v) for k, v in fields.items()}
    kind = named.get("kind")
    if kind not in KINDS:
        raise ValueError(f"entry kind {kind!r} is neither 'decision' nor 'score'")
    try:
        record = json.loads(named["record"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"entry has no readable record: {exc}") from None
    if not isinstance(record, dict) or not record.get("decision_id"):
        raise ValueError("entry record is not an object with a decision_id")
    return ("decision" if kind == "decision" else "score"), record


def parse_ts(value: Any) -> datetime | None:
    """A record's ``ts`` (ISO 8601) as an aware UTC datetime; None when missing or unreadable.
    A time without a zone is taken as UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def record_day(record: Mapping[str, Any], default: date) -> date:
    """The UTC day of the record's ``ts``, or ``default`` when it has none."""
    ts = parse_ts(record.get("ts"))
    return ts.date() if ts is not None else default


class SpillFile:
    """Appends records as JSON Lines, one flush and fsync per line, one file per day and
    process: ``decisions-YYYY-MM-DD.<host>-<pid>.jsonl`` and ``scores-….jsonl``."""

    def __init__(self, directory: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.directory = directory
        self.clock = clock
        self._suffix = f"{socket.gethostname()}-{os.getpid()}"

    def path(self, kind: Kind, day: date) -> Path:
        return self.directory / f"{kind}s-{day.isoformat()}.{self._suffix}.jsonl"

    def append(self, kind: Kind, record: Mapping[str, Any]) -> Path:
        today = datetime.fromtimestamp(self.clock(), UTC).date()
        path = self.path(kind, record_day(record, today))
        self.directory.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return path


class RedisStreamOutcomeSink:
    """The ``OutcomeSink`` that appends to a Redis Stream (``XADD``), spilling to a local
    file when Redis fails. It never raises for a Redis failure; when the spill file cannot
    be written either, the record is logged at ERROR level with its full JSON."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        outcomes_dir: Path,
        stream: str = "ttc:outcomes",
        maxlen: int = STREAM_MAXLEN,
        retry_after_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if maxlen <= 0:
            raise ValueError("maxlen must be positive")
        self.client = client
        self.stream = stream
        self.maxlen = maxlen
        self.retry_after_s = retry_after_s
        self.clock = clock
        self.spill = SpillFile(outcomes_dir / SPILL_DIR, clock=clock)
        self._lock = asyncio.Lock()
        self._redis_down_until = 0.0

    async def write_decision(self, record: Mapping[str, Any]) -> None:
        await self._write("decision", dict(record))

    async def write_score(self, decision_id: str, tenant: str, score: float) -> None:
        ts = datetime.fromtimestamp(self.clock(), UTC).isoformat()
        await self._write(
            "score", {"decision_id": decision_id, "tenant": tenant, "score": score, "ts": ts}
        )

    async def _write(self, kind: Kind, record: dict[str, Any]) -> None:
        import redis.exceptions

        reason = "Redis failed a moment ago"
        if time.monotonic() >= self._redis_down_until:
            try:
                await self.client.xadd(
                    self.stream,
                    stream_fields(kind, record),  # type: ignore[arg-type]
                    maxlen=self.maxlen,
                    approximate=True,
                )
                return
            except (redis.exceptions.RedisError, OSError) as exc:
                self._redis_down_until = time.monotonic() + self.retry_after_s
                reason = f"{type(exc).__name__}: {exc}"
        await self._spill(kind, record, reason)

    async def _spill(self, kind: Kind, record: dict[str, Any], reason: str) -> None:
        try:
            async with self._lock:
                path = await asyncio.to_thread(self.spill.append, kind, record)
        except OSError as exc:
            log.error(
                "outcome %s %s could not go to Redis (%s) nor to the spill file (%s): %s",
                kind,
                record.get("decision_id"),
                reason,
                exc,
                dumps(record),
            )
            return
        OUTCOMES_SPILLED.labels(kind).inc()
        log.warning(
            "outcome %s %s written to %s: the stream %s could not take it (%s)",
            kind,
            record.get("decision_id"),
            path,
            self.stream,
            reason,
        )
