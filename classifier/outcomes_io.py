"""Outcome records (``spec/outcomes.md``): the typed record and its JSON Lines reader/writer.

A broken record raises ``router.errors.InvalidRequest`` naming the file and line. An
outcome file is the input a caller hands to ``train``/``eval``/``predict``, so a bad
line is a malformed request to be fixed by whoever supplied it; ``ConfigError`` is kept
for the service's own configuration, whose failure means the service itself is
misconfigured.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from router.core.types import Arm
from router.errors import InvalidRequest

_REQUIRED_STR = ("prompt_id", "prompt", "arm")
_OPTIONAL_STR = ("task", "request_id", "tenant", "ts", "model")
_OPTIONAL_INT = ("input_tokens", "output_tokens")


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
    for name in _REQUIRED_STR:
        if not isinstance(obj[name], str) or not obj[name]:
            raise bad(f"field {name!r} must be a non-empty string")
    try:
        Arm.parse(obj["arm"])
    except InvalidRequest as exc:
        raise bad(exc.message) from None
    score, cost = obj["score"], obj["cost_usd"]
    if not _is_number(score) or not 0.0 <= score <= 1.0:
        raise bad(f"field 'score' must be a number in [0, 1], got {score!r}")
    if not _is_number(cost) or cost < 0.0:
        raise bad(f"field 'cost_usd' must be a number >= 0, got {cost!r}")
    for name in _OPTIONAL_STR:
        if obj.get(name) is not None and not isinstance(obj[name], str):
            raise bad(f"field {name!r} must be a string")
    for name in _OPTIONAL_INT:
        value = obj.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 0
        ):
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
        prompt_id=obj["prompt_id"],
        prompt=obj["prompt"],
        arm=obj["arm"],
        score=float(score),
        cost_usd=float(cost),
        task=obj.get("task"),
        input_tokens=obj.get("input_tokens"),
        output_tokens=obj.get("output_tokens"),
        latency_ms=None if latency is None else float(latency),
        propensity=None if propensity is None else float(propensity),
        request_id=obj.get("request_id"),
        tenant=obj.get("tenant"),
        ts=obj.get("ts"),
        model=obj.get("model"),
        samples=float(samples) if samples else None,
    )


def iter_json_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of each non-blank line of a JSON Lines file.

    A file that cannot be opened, a line that is not JSON, or one that is not an object
    raises ``InvalidRequest`` naming the file and line.
    """
    try:
        handle = path.open("r", encoding="utf-8")
    except OSError as exc:
        raise InvalidRequest(f"{path}: cannot open: {exc.strerror}") from None
    with handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidRequest(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise InvalidRequest(f"{path}:{lineno}: a line must be a JSON object")
            yield lineno, obj


def iter_outcomes(path: Path) -> Iterator[OutcomeRecord]:
    """Yield the records of a JSON Lines file; blank lines are skipped."""
    for lineno, obj in iter_json_objects(path):
        yield parse_record(obj, where=f"{path}:{lineno}")


def read_outcomes(path: Path) -> list[OutcomeRecord]:
    """Read and validate every record of a JSON Lines file."""
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
    "iter_outcomes",
    "parse_record",
    "read_outcomes",
    "write_outcomes",
]
