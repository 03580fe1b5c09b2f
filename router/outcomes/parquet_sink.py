"""Drains the outcome stream into day-partitioned Parquet files, each record exactly once.

Layout under the outcomes directory::

    decisions/day=YYYY-MM-DD/part-<consumer>-<seq>.parquet
    scores/day=YYYY-MM-DD/part-<consumer>-<seq>.parquet
    rejected/<consumer>.jsonl         stream entries that are not outcome records

The day is the record's ``ts`` in UTC (the entry's stream time when it has none); ``seq`` is
a millisecond time stamp that grows with each part a consumer writes. Columns are those of
``DECISION_COLUMNS`` / ``SCORE_COLUMNS``: scalar fields keep their type, ``detail`` and
``usage_by_tier`` are JSON text, and any other field (or a value of the wrong type) goes into
the ``extra`` column as a JSON object, so ``record_from_row(row_from_record(r)) == r``.

``ParquetDrain`` reads the stream as a member of a consumer group. It first takes back its
own unacknowledged entries, then claims entries another consumer has held for longer than
``claim_idle_s`` (a consumer that died), then reads new ones. A batch is written when it
holds ``batch`` records or ``flush_s`` after its first record: each part goes to a hidden
temporary file, is flushed and fsynced, renamed into place and its directory fsynced, and
only then are the entries acknowledged. A record whose decision id (for scores: decision id
and ``ts``) is already in the day's part files is acknowledged and skipped; the drain learns
a day's ids by reading the ``decision_id`` column of the day's parts, and reads each part
only once. A crash at any point therefore leaves each record in the files once: entries
written but not acknowledged come back and are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from prometheus_client import Counter

from router.errors import Unavailable
from router.outcomes.redis_stream import Kind, dumps, parse_fields, record_day

if TYPE_CHECKING:
    import redis.asyncio as aioredis

log = logging.getLogger("ttc_router.outcomes")

ColumnType = Literal["string", "int", "float", "bool", "json"]

DECISION_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("decision_id", "string"),
    ("prompt_id", "string"),
    ("prompt", "string"),
    ("arm", "string"),
    ("score", "float"),
    ("cost_usd", "float"),
    ("task", "string"),
    ("input_tokens", "int"),
    ("output_tokens", "int"),
    ("latency_ms", "float"),
    ("propensity", "float"),
    ("explored", "bool"),
    ("request_id", "string"),
    ("tenant", "string"),
    ("ts", "string"),
    ("model", "string"),
    ("tier", "string"),
    ("strategy", "string"),
    ("samples", "int"),
    ("usage_estimated", "bool"),
    ("detail", "json"),
    ("partial_output_tokens", "int"),
    ("fallback_from", "string"),
    ("fallback_reason", "string"),
    ("predicted_p_success", "float"),
    ("predicted_cost_usd", "float"),
    ("reserved_cost_usd", "float"),
    ("model_version", "string"),
    ("error", "string"),
    ("usage_by_tier", "json"),
)
"""Decision columns in file order; an ``extra`` string column (JSON object) follows."""

SCORE_COLUMNS: tuple[tuple[str, ColumnType], ...] = (
    ("decision_id", "string"),
    ("tenant", "string"),
    ("score", "float"),
    ("ts", "string"),
)
"""Score columns in file order; an ``extra`` string column follows."""

COLUMNS: dict[Kind, tuple[tuple[str, ColumnType], ...]] = {
    "decision": DECISION_COLUMNS,
    "score": SCORE_COLUMNS,
}
DIRS: dict[Kind, str] = {"decision": "decisions", "score": "scores"}
SCHEMA_VERSION = "1"
_INT64 = 2**63

OUTCOMES_DRAINED = Counter(
    "ttc_outcomes_drained_total",
    "Outcome stream entries the Parquet drain handled, by kind and result",
    ["kind", "result"],
)
"""``result``: written | duplicate | rejected."""


# ---- records <-> rows ------------------------------------------------------------------
def _fits(kind: ColumnType, value: Any) -> bool:
    if value is None or kind == "json":
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "int":
        return isinstance(value, int) and -_INT64 <= value < _INT64
    return isinstance(value, int | float)


def row_from_record(kind: Kind, record: Mapping[str, Any]) -> dict[str, Any]:
    """One Parquet row: the schema's columns, plus ``extra`` (JSON text or None) holding every
    other field and every value that does not fit its column's type."""
    row: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, col in COLUMNS[kind]:
        value = record.get(name)
        if not _fits(col, value):
            extra[name] = value
            value = None
        elif col == "json":
            value = None if name not in record else dumps(value)
        elif col == "float" and value is not None:
            value = float(value)
        row[name] = value
    known = {name for name, _ in COLUMNS[kind]}
    extra.update((k, v) for k, v in record.items() if k not in known)
    row["extra"] = dumps(extra) if extra else None
    return row


def record_from_row(kind: Kind, row: Mapping[str, Any]) -> dict[str, Any]:
    """The record a row was made from: scalar columns always (None when null), JSON columns
    when not null, then the fields kept in ``extra``."""
    record: dict[str, Any] = {}
    for name, col in COLUMNS[kind]:
        value = row.get(name)
        if col == "json":
            if value is not None:
                record[name] = json.loads(value)
        else:
            record[name] = value
    if row.get("extra"):
        record.update(json.loads(row["extra"]))
    return record


def dedup_key(kind: Kind, record: Mapping[str, Any]) -> str:
    """What makes a record unique: its decision id, for a score also its ``ts``."""
    if kind == "decision":
        return str(record["decision_id"])
    return f"{record['decision_id']}\x00{record.get('ts')}"


def arrow_schema(kind: Kind) -> Any:
    """The ``pyarrow.Schema`` of a kind's part files."""
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "int": pa.int64(),
        "float": pa.float64(),
        "bool": pa.bool_(),
        "json": pa.string(),
    }
    fields = [pa.field(name, types[col]) for name, col in COLUMNS[kind]]
    fields.append(pa.field("extra", pa.string()))
    meta = {"ttc.kind": kind, "ttc.schema_version": SCHEMA_VERSION}
    return pa.schema(fields, metadata=meta)


# ---- files -----------------------------------------------------------------------------
def day_dir(directory: Path, kind: Kind, day: date) -> Path:
    return directory / DIRS[kind] / f"day={day.isoformat()}"


def part_files(folder: Path) -> list[Path]:
    """The finished part files of one day folder, in name order (temporary files excluded)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("part-*.parquet") if p.is_file())


def day_folders(directory: Path, kind: Kind, since: date | None = None) -> list[tuple[date, Path]]:
    """``(day, folder)`` of each ``day=YYYY-MM-DD`` folder of a kind, oldest first."""
    root = directory / DIRS[kind]
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if not p.is_dir() or not p.name.startswith("day="):
            continue
        try:
            day = date.fromisoformat(p.name[4:])
        except ValueError:
            continue
        if since is None or day >= since:
            out.append((day, p))
    return sorted(out)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_dirs(folder: Path) -> None:
    """Create ``folder`` and its missing parents, fsyncing each parent that got a new entry."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            d.mkdir()
        _fsync_dir(d.parent)


def write_part(path: Path, kind: Kind, records: Sequence[Mapping[str, Any]]) -> None:
    """Write ``records`` to the part file ``path`` so that it appears whole or not at all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    _make_dirs(path.parent)
    table = pa.Table.from_pylist(
        [row_from_record(kind, r) for r in records], schema=arrow_schema(kind)
    )
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        pq.write_table(table, f, compression="zstd")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def read_part(path: Path, kind: Kind) -> list[dict[str, Any]]:
    """The records of one part file."""
    import pyarrow.parquet as pq

    return [
        record_from_row(kind, row) for row in pq.read_table(path, partitioning=None).to_pylist()
    ]


def part_keys(path: Path, kind: Kind) -> set[str]:
    """The dedup keys of one part file, read from its key columns only."""
    import pyarrow.parquet as pq

    cols = ["decision_id"] if kind == "decision" else ["decision_id", "ts"]
    return {
        dedup_key(kind, row)
        for row in pq.read_table(path, columns=cols, partitioning=None).to_pylist()
    }


@dataclass
class _Day:
    files: set[str] = field(default_factory=set)
    keys: set[str] = field(default_factory=set)


class SeenKeys:
    """Which records each day's part files already hold, learnt from the files.

    ``refresh`` reads the parts of a day it has not read yet (also those other consumers
    wrote); ``add`` notes a part this process wrote. At most ``max_days`` days per kind stay
    in memory; a day dropped from memory is read again when needed.
    """

    def __init__(self, directory: Path, *, max_days: int = 8) -> None:
        self.directory = directory
        self.max_days = max_days
        self._days: OrderedDict[tuple[Kind, date], _Day] = OrderedDict()

    def _day(self, kind: Kind, day: date) -> _Day:
        k = (kind, day)
        entry = self._days.get(k)
        if entry is None:
            entry = self._days[k] = _Day()
        self._days.move_to_end(k)
        while len(self._days) > self.max_days * 2:
            self._days.popitem(last=False)
        return entry

    def refresh(self, kind: Kind, day: date) -> set[str]:
        entry = self._day(kind, day)
        for p in part_files(day_dir(self.directory, kind, day)):
            if p.name not in entry.files:
                entry.keys |= part_keys(p, kind)
                entry.files.add(p.name)
        return entry.keys

    def add(self, kind: Kind, day: date, part: Path, keys: Iterable[str]) -> None:
        entry = self._day(kind, day)
        entry.files.add(part.name)
        entry.keys.update(keys)


def safe_name(consumer: str) -> str:
    """A consumer name usable inside a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in consumer) or "consumer"


def default_consumer() -> str:
    """``<host>-<pid>``: the name a server replica's drain uses."""
    return f"{socket.gethostname()}-{os.getpid()}"


# ---- the drain -------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One stream entry as read: its id and raw fields (empty when trimmed away)."""

    entry_id: str
    fields: Mapping[Any, Any]

    @property
    def stream_day(self) -> date:
        ms = int(self.entry_id.split("-", 1)[0])
        return datetime.fromtimestamp(ms / 1000, UTC).date()


@dataclass
class FlushStats:
    written: int = 0
    duplicates: int = 0
    rejected: int = 0
    parts: list[Path] = field(default_factory=list)


@dataclass
class DrainTotals:
    written: int = 0
    duplicates: int = 0
    rejected: int = 0
    parts: int = 0

    def add(self, s: FlushStats) -> None:
        self.written += s.written
        self.duplicates += s.duplicates
        self.rejected += s.rejected
        self.parts += len(s.parts)


def _id(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class ParquetDrain:
    """Moves the outcome stream into Parquet under ``directory`` (see the module docstring).

    ``run(stop)`` works until ``stop`` is set, then writes and acknowledges what it holds and
    returns. Redis and disk failures are logged and retried; they do not end ``run``.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        directory: Path,
        *,
        stream: str = "ttc:outcomes",
        group: str = "ttc-sink",
        consumer: str | None = None,
        batch: int = 500,
        flush_s: float = 1.0,
        claim_idle_s: float = 60.0,
        block_ms: int = 1000,
        forget_consumers_s: float = 3600.0,
        retry_s: float = 1.0,
    ) -> None:
        if batch <= 0 or flush_s <= 0 or claim_idle_s <= 0 or block_ms <= 0:
            raise ValueError("batch, flush_s, claim_idle_s and block_ms must be positive")
        self.client = client
        self.directory = directory
        self.stream = stream
        self.group = group
        self.consumer = consumer or default_consumer()
        self.batch = batch
        self.flush_s = flush_s
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.block_ms = block_ms
        self.forget_consumers_ms = int(forget_consumers_s * 1000)
        self.retry_s = retry_s
        self.seen = SeenKeys(directory)
        self.totals = DrainTotals()
        self._file_tag = safe_name(self.consumer)
        self._seq = 0
        self._buffer: dict[str, Entry] = {}
        self._first_at: float | None = None
        self._unacked: dict[str, None] = {}
        self._pending_from: str | None = "0"
        self._claim_from = "0-0"
        self._next_claim = 0.0

    @property
    def buffered(self) -> int:
        """Entries read and not written yet."""
        return len(self._buffer)

    # -- Redis calls, their errors wrapped --
    async def _redis(self, what: str, call: Any) -> Any:
        import redis.exceptions

        try:
            return await call
        except (redis.exceptions.RedisError, OSError) as exc:
            raise Unavailable(
                f"outcome stream {self.stream!r}: {what} failed: {type(exc).__name__}: {exc}"
            ) from exc

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) if missing; a new group starts at the
        stream's first entry."""
        import redis.exceptions

        try:
            await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise Unavailable(f"cannot create consumer group {self.group!r}: {exc}") from exc
        except (redis.exceptions.RedisError, OSError) as exc:
            raise Unavailable(
                f"outcome stream {self.stream!r}: cannot create the group: {exc}"
            ) from exc

    def remove_stale_temp_files(self, *, abandoned_after_s: float = 3600.0) -> None:
        """Delete temporary part files left by a kill mid-write: this consumer's, and any
        other consumer's not touched for ``abandoned_after_s``."""
        mine = f".part-{self._file_tag}-"
        cutoff = time.time() - abandoned_after_s
        for kind in DIRS:
            for _, folder in day_folders(self.directory, kind):
                for tmp in folder.glob(".part-*.parquet.tmp"):
                    with contextlib.suppress(FileNotFoundError):
                        if tmp.name.startswith(mine) or tmp.stat().st_mtime < cutoff:
                            tmp.unlink()

    # -- reading --
    def _take(self, raw: Iterable[Any]) -> str | None:
        last = None
        for entry_id, fields in raw:
            if entry_id is None:
                continue
            eid = _id(entry_id)
            last = eid
            if eid not in self._buffer and eid not in self._unacked:
                self._buffer[eid] = Entry(eid, fields or {})
                if self._first_at is None:
                    self._first_at = time.monotonic()
        return last

    def _room(self) -> int:
        return self.batch - len(self._buffer)

    async def _read_own_pending(self) -> None:
        assert self._pending_from is not None
        reply = await self._redis(
            "XREADGROUP (own pending)",
            self.client.xreadgroup(
                self.group, self.consumer, {self.stream: self._pending_from}, count=self._room()
            ),
        )
        entries = reply[0][1] if reply else []
        self._pending_from = self._take(entries)

    async def _claim(self) -> None:
        reply = await self._redis(
            "XAUTOCLAIM",
            self.client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                self.claim_idle_ms,
                self._claim_from,
                count=self._room(),
            ),
        )
        self._claim_from = _id(reply[0])
        claimed = [(i, f) for i, f in reply[1] if i is not None]
        if claimed:
            log.info("claimed %d outcome entries from stopped consumers", len(claimed))
        self._take(claimed)
        if self._claim_from == "0-0":
            self._next_claim = time.monotonic() + min(30.0, self.claim_idle_ms / 2000)
            await self._forget_consumers()

    async def _forget_consumers(self) -> None:
        """Drop group members with nothing pending that have been idle a long time."""
        consumers = await self._redis(
            "XINFO CONSUMERS", self.client.xinfo_consumers(self.stream, self.group)
        )
        for c in consumers:
            name = _id(c["name"])
            if (
                name != self.consumer
                and int(c["pending"]) == 0
                and int(c["idle"]) > self.forget_consumers_ms
            ):
                await self._redis(
                    "XGROUP DELCONSUMER",
                    self.client.xgroup_delconsumer(self.stream, self.group, name),
                )

    async def _read_new(self, *, wait: bool = True) -> bool:
        """Read new entries, waiting for some at most until the batch is due (or ``block_ms``)
        when ``wait``; True when some came."""
        block: int | None = None
        if wait:
            block = self.block_ms
            if self._first_at is not None:
                left = self._first_at + self.flush_s - time.monotonic()
                block = max(1, min(block, int(left * 1000)))
        reply = await self._redis(
            "XREADGROUP",
            self.client.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=self._room(), block=block
            ),
        )
        return self._take(reply[0][1] if reply else []) is not None

    async def read_once(self) -> None:
        """One read: own pending entries first, then due claims, then new entries."""
        if self._pending_from is not None:
            await self._read_own_pending()
        elif time.monotonic() >= self._next_claim:
            await self._claim()
        else:
            await self._read_new()

    # -- writing --
    def _next_part(self, kind: Kind, day: date) -> Path:
        folder = day_dir(self.directory, kind, day)
        self._seq = max(self._seq + 1, time.time_ns() // 1_000_000)
        while (path := folder / f"part-{self._file_tag}-{self._seq:013d}.parquet").exists():
            self._seq += 1
        return path

    def _reject(self, entries: list[tuple[Entry, str]]) -> None:
        folder = self.directory / "rejected"
        _make_dirs(folder)
        with (folder / f"{self._file_tag}.jsonl").open("a", encoding="utf-8") as f:
            for entry, why in entries:
                fields = {_id(k): _id(v) for k, v in entry.fields.items()}
                f.write(dumps({"entry_id": entry.entry_id, "why": why, "fields": fields}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_batch(self, entries: Sequence[Entry]) -> FlushStats:
        """Write the records of ``entries`` that no part file holds yet; returns counts."""
        stats = FlushStats()
        groups: dict[tuple[Kind, date], dict[str, dict[str, Any]]] = {}
        rejected: list[tuple[Entry, str]] = []
        for entry in entries:
            if not entry.fields:
                log.warning("outcome entry %s was trimmed from the stream unread", entry.entry_id)
                rejected.append((entry, "trimmed from the stream before it was drained"))
                continue
            try:
                kind, record = parse_fields(entry.fields)
            except ValueError as exc:
                rejected.append((entry, str(exc)))
                continue
            rows = groups.setdefault((kind, record_day(record, entry.stream_day)), {})
            key = dedup_key(kind, record)
            if key in rows:
                stats.duplicates += 1
                OUTCOMES_DRAINED.labels(kind, "duplicate").inc()
            else:
                rows[key] = record
        if rejected:
            self._reject(rejected)
            stats.rejected += len(rejected)
            OUTCOMES_DRAINED.labels("unknown", "rejected").inc(len(rejected))
        for (kind, day), rows in sorted(groups.items()):
            seen = self.seen.refresh(kind, day)
            fresh = {k: r for k, r in rows.items() if k not in seen}
            dup = len(rows) - len(fresh)
            stats.duplicates += dup
            OUTCOMES_DRAINED.labels(kind, "duplicate").inc(dup)
            if not fresh:
                continue
            part = self._next_part(kind, day)
            write_part(part, kind, list(fresh.values()))
            self.seen.add(kind, day, part, fresh)
            stats.written += len(fresh)
            stats.parts.append(part)
            OUTCOMES_DRAINED.labels(kind, "written").inc(len(fresh))
        return stats

    async def flush(self) -> FlushStats:
        """Write the buffered entries, then acknowledge them."""
        stats = FlushStats()
        if self._buffer:
            entries = list(self._buffer.values())
            stats = await asyncio.to_thread(self.write_batch, entries)
            self._unacked.update(dict.fromkeys(self._buffer))
            self._buffer.clear()
            self._first_at = None
            self.totals.add(stats)
            log.debug(
                "outcomes: %d written, %d duplicates, %d rejected in %d part(s)",
                stats.written,
                stats.duplicates,
                stats.rejected,
                len(stats.parts),
            )
        await self._ack()
        return stats

    async def _ack(self) -> None:
        while self._unacked:
            chunk = list(self._unacked)[:1000]
            await self._redis("XACK", self.client.xack(self.stream, self.group, *chunk))
            for eid in chunk:
                del self._unacked[eid]

    def _due(self) -> bool:
        if len(self._buffer) >= self.batch:
            return True
        return self._first_at is not None and time.monotonic() - self._first_at >= self.flush_s

    async def run(self, stop: asyncio.Event, *, catch_up_batches: int = 0) -> DrainTotals:
        """Drain until ``stop`` is set; then write and acknowledge the current batch and return
        the totals. With ``catch_up_batches``, first also take up to that many more batches of
        what the stream already holds (a server's drain catches up with its last records)."""
        prepared = False
        while not stop.is_set():
            try:
                if not prepared:
                    await asyncio.to_thread(self.remove_stale_temp_files)
                    await self.ensure_group()
                    prepared = True
                if self._unacked:
                    await self._ack()
                if len(self._buffer) < self.batch:
                    await self.read_once()
                if self._due():
                    await self.flush()
            except Exception as exc:
                message = exc.message if isinstance(exc, Unavailable) else repr(exc)
                log.warning("outcome drain: %s; retrying in %.1f s", message, self.retry_s)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.retry_s)
        try:
            for _ in range(catch_up_batches if prepared else 0):
                if len(self._buffer) < self.batch and not await self._read_new(wait=False):
                    break
                await self.flush()
            await self.flush()
        except Exception as exc:
            # Entries not acknowledged stay pending and are skipped as duplicates next time.
            log.warning("outcome drain could not finish its last batch: %r", exc)
        return self.totals


class DrainTask:
    """A ``ParquetDrain`` running as an asyncio task, stopped by ``aclose`` (which lets it
    write and acknowledge its current batch) and closing its Redis client afterwards."""

    def __init__(
        self, drain: ParquetDrain, *, owns_client: bool = True, catch_up_batches: int = 20
    ) -> None:
        self.drain = drain
        self._stop = asyncio.Event()
        self._owns_client = owns_client
        self._task = asyncio.create_task(
            drain.run(self._stop, catch_up_batches=catch_up_batches), name="outcome-drain"
        )

    async def aclose(self) -> None:
        self._stop.set()
        try:
            await self._task
        finally:
            if self._owns_client:
                await self.drain.client.aclose()


def start_drain(
    redis_url: str,
    directory: Path,
    *,
    stream: str,
    consumer: str | None = None,
    **options: Any,
) -> DrainTask:
    """Connect to ``redis_url`` with a client of its own and start draining ``stream``."""
    from router.ledger.connect import connect

    block_ms = int(options.get("block_ms", 1000))
    client, _ = connect(redis_url, socket_connect_timeout=2.0, socket_timeout=block_ms / 1000 + 5)
    drain = ParquetDrain(client, directory, stream=stream, consumer=consumer, **options)
    return DrainTask(drain)
