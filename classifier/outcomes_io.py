"""Outcome records (``spec/outcomes.md``): the typed record, its reader (JSON Lines or
Parquet with the same columns) and its JSON Lines writer.

A broken record raises ``router.errors.InvalidRequest`` naming the file and line (for
Parquet, the 1-based row). An
outcome file is the input a caller hands to ``train``/``eval``/``predict``, so a bad
line is a malformed request to be fixed by whoever supplied it; ``ConfigError`` is kept
for the service's own configuration, whose failure means the service itself is
misconfigured.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.core.types import Arm
from router.errors import InvalidRequest

_REQUIRED_STR = ("prompt_id", "prompt", "arm")
_OPTIONAL_STR = ("task", "request_id", "tenant", "ts", "model")
_OPTIONAL_INT = ("input_tokens", "output_tokens")
PARQUET_SUFFIXES = (".parquet", ".pq")
_PARQUET_MAGIC = b"PAR1"


@dataclass(frozen=True)
class OutcomeRecord:
    """One observation: an arm answered a prompt, with its score and cost."""

    prompt_id: str
    prompt: str
    arm: str
    score: float
    cost_usd: float
    task: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    propensity: float | None = None
    request_id: str | None = None
    tenant: str | None = None
    ts: str | None = None
    model: str | None = None
    samples: float | None = None
    """Samples the arm actually drew (an early-stopped ``vote@k`` may use fewer than k; a
    mean over replays may be fractional); not in the spec's table, read when present.
    Tokens per sample divide by it."""

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object; absent optional fields are left out."""
        out: dict[str, Any] = {
            "prompt_id": self.prompt_id,
            "prompt": self.prompt,
            "arm": self.arm,
            "score": self.score,
            "cost_usd": self.cost_usd,
        }
        for name in (*_OPTIONAL_STR, *_OPTIONAL_INT, "latency_ms", "propensity", "samples"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        return out


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _as_count(value: object) -> int | None:
    """A token count: an integer >= 0, or a float with an integer value (as a Parquet
    integer column with gaps, or a JSON ``300.0``, carries it); None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def prompt_id_of(value: object) -> str | None:
    """A prompt id: a non-empty string, or an integer (kept as its decimal string)."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def parse_record(obj: object, *, where: str = "<record>") -> OutcomeRecord:
    """Validate one decoded JSON object; ``where`` (e.g. ``file:line``) prefixes errors.

    Fields the spec does not name (a logged ``decision_id``, say) are ignored.
    """

    def bad(msg: str) -> InvalidRequest:
        return InvalidRequest(f"{where}: {msg}")

    if not isinstance(obj, Mapping):
        raise bad(f"an outcome record must be a JSON object, got {type(obj).__name__}")
    for name in (*_REQUIRED_STR, "score", "cost_usd"):
        if name not in obj:
            raise bad(f"required field {name!r} is missing")
    prompt_id = prompt_id_of(obj["prompt_id"])
    if prompt_id is None:
        raise bad("field 'prompt_id' must be a non-empty string (or an integer)")
    for name in ("prompt", "arm"):
        if not isinstance(obj[name], str) or not obj[name]:
            raise bad(f"field {name!r} must be a non-empty string")
    try:
        Arm.parse(obj["arm"])
    except InvalidRequest as exc:
        raise bad(exc.message) from None
    score, cost = obj["score"], obj["cost_usd"]
    if not _is_number(score):
        raise bad(f"field 'score' must be a number (the spec's scale is [0, 1]), got {score!r}")
    if not _is_number(cost) or cost < 0.0:
        raise bad(f"field 'cost_usd' must be a number >= 0, got {cost!r}")
    for name in _OPTIONAL_STR:
        if obj.get(name) is not None and not isinstance(obj[name], str):
            raise bad(f"field {name!r} must be a string")
    counts: dict[str, int | None] = {}
    for name in _OPTIONAL_INT:
        value = obj.get(name)
        counts[name] = None if value is None else _as_count(value)
        if value is not None and counts[name] is None:
            raise bad(f"field {name!r} must be an integer >= 0, got {value!r}")
    latency = obj.get("latency_ms")
    if latency is not None and (not _is_number(latency) or latency < 0):
        raise bad(f"field 'latency_ms' must be a number >= 0, got {latency!r}")
    samples = obj.get("samples")
    if samples is not None and (not _is_number(samples) or samples < 0):
        raise bad(f"field 'samples' must be a number >= 0, got {samples!r}")
    propensity = obj.get("propensity")
    if propensity is not None and (not _is_number(propensity) or not 0.0 < propensity <= 1.0):
        raise bad(f"field 'propensity' must be a number in (0, 1], got {propensity!r}")
    return OutcomeRecord(
        prompt_id=prompt_id,
        prompt=obj["prompt"],
        arm=obj["arm"],
        score=float(score),
        cost_usd=float(cost),
        task=obj.get("task"),
        input_tokens=counts["input_tokens"],
        output_tokens=counts["output_tokens"],
        latency_ms=None if latency is None else float(latency),
        propensity=None if propensity is None else float(propensity),
        request_id=obj.get("request_id"),
        tenant=obj.get("tenant"),
        ts=obj.get("ts"),
        model=obj.get("model"),
        samples=float(samples) if samples else None,
    )


def is_parquet(path: Path) -> bool:
    """A ``.parquet``/``.pq`` name, or a file that opens with Parquet's magic bytes."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return True
    try:
        with path.open("rb") as handle:
            return handle.read(len(_PARQUET_MAGIC)) == _PARQUET_MAGIC
    except OSError:
        return False


def iter_json_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a JSON Lines file, or (row number,
    row) of each row of a Parquet file (:func:`is_parquet`), null cells left out as a JSON
    line leaves out an absent field.

    A file that cannot be opened or decoded, a line that is not JSON, or one that is not an
    object raises ``InvalidRequest`` naming the file and line.
    """
    if is_parquet(path):
        yield from _iter_parquet_rows(path)
        return
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise InvalidRequest(f"{path}: cannot open: {exc.strerror}") from None
    with handle:
        for lineno, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError:
                raise InvalidRequest(
                    f"{path}:{lineno}: not UTF-8 text; give JSON Lines, or Parquet "
                    f"named {' or '.join(PARQUET_SUFFIXES)}"
                ) from None
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidRequest(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise InvalidRequest(f"{path}:{lineno}: a line must be a JSON object")
            yield lineno, obj


def _iter_parquet_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    row = 0
    try:
        table = pq.ParquetFile(path)
        for batch in table.iter_batches(batch_size=4096):
            for obj in batch.to_pylist():
                row += 1
                yield row, {k: p for k, v in obj.items() if (p := _plain(v)) is not None}
    except FileNotFoundError as exc:
        raise InvalidRequest(f"{path}: cannot open: {exc.strerror}") from None
    except (OSError, pa.ArrowException) as exc:
        where = f"{path}:{row + 1}" if row else str(path)
        raise InvalidRequest(f"{where}: not a readable Parquet file ({exc})") from None


def _plain(value: Any) -> Any:
    """A Parquet cell as JSON would carry it: NaN as absent, a timestamp as ISO text."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    return value


def iter_outcomes(path: Path) -> Iterator[OutcomeRecord]:
    """Yield the records of a JSON Lines or Parquet file; blank lines are skipped."""
    for lineno, obj in iter_json_objects(path):
        yield parse_record(obj, where=f"{path}:{lineno}")


def read_outcomes(path: Path) -> list[OutcomeRecord]:
    """Read and validate every record of a JSON Lines or Parquet file."""
    return list(iter_outcomes(path))


def write_outcomes(path: Path, records: Iterable[OutcomeRecord]) -> int:
    """Write records as JSON Lines (UTF-8, one object per line); returns the count."""
    n = 0
    with path.open("w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record.to_json(), ensure_ascii=False, sort_keys=True))
            handle.write("\n")
            n += 1
    return n


def prepare_output(directory: Path, what: str) -> None:
    """Refuse an output folder that cannot be created or written, before the work rather
    than after it; nothing is created here, so a run that fails later leaves nothing."""
    existing = directory
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidRequest(f"{what}: cannot create {directory}: {existing} is not a folder")
    if not os.access(existing, os.W_OK):
        raise InvalidRequest(f"{what}: cannot create {directory}: {existing} is not writable")


def warn_if_prompt_texts_differ(records: Iterable[OutcomeRecord], where: str) -> int:
    """Log a warning when a prompt id carries more than one prompt text (say, each arm's
    record holding its own chat template); every prompt is embedded from the text of its
    first record. Returns how many prompt ids do."""
    first: dict[str, str] = {}
    differ: dict[str, None] = {}
    for r in records:
        if first.setdefault(r.prompt_id, r.prompt) != r.prompt:
            differ[r.prompt_id] = None
    if differ:
        logging.getLogger(__name__).warning(
            "%s: %d prompt id(s) carry more than one prompt text (first: %r); each prompt is "
            "read from the text of its first record",
            where,
            len(differ),
            next(iter(differ)),
        )
    return len(differ)


def full_information_prompts(records: Iterable[OutcomeRecord], arms: Iterable[str]) -> set[str]:
    """Prompt ids that have at least one record for every arm in ``arms``."""
    wanted = set(arms)
    seen: dict[str, set[str]] = {}
    for r in records:
        seen.setdefault(r.prompt_id, set()).add(r.arm)
    return {pid for pid, got in seen.items() if wanted <= got}


__all__ = [
    "OutcomeRecord",
    "full_information_prompts",
    "is_parquet",
    "iter_json_objects",
    "iter_outcomes",
    "parse_record",
    "prepare_output",
    "prompt_id_of",
    "read_outcomes",
    "warn_if_prompt_texts_differ",
    "write_outcomes",
]
