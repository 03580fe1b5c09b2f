"""Multi-sample tables: several sampled answers per (prompt, tier), and their JSON Lines form.

Generic format (JSON Lines, one line per prompt x tier)::

    {"prompt_id": "q17", "prompt": "...", "tier": "cheap", "task": "gsm8k",
     "gold": "18", "input_tokens": 52,
     "samples": [{"answer": "18", "output_tokens": 95},
                 {"text": "... so the answer is 20", "score": 0.0}]}

* ``prompt_id``, ``prompt``: required strings; ``task``: optional;
* ``tier``: the tier that produced the samples (or ``arm``: a tier name or a
  ``<tier>/<strategy>`` arm, whose tier is used);
* ``gold`` (or ``reference``): the correct answer; needed unless every sample has a score;
* ``input_tokens``: tokens of one call's input (default: counted from the prompt);
* ``samples``: in the order they were drawn; each has ``answer`` (string, number or null
  for "no answer"; when absent it is extracted from ``text`` with the service's
  ``auto`` extractor), ``output_tokens`` (default: counted from ``text``; one of the two is
  required) and optionally ``score`` in [0, 1] (default: 1 when the answer equals the gold
  answer, else 0).

Answers are compared after normalisation (:func:`answer_key`): numbers by value (commas,
a leading ``$`` and float noise below 1e-6 ignored), text case- and space-insensitively.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifier.importers.tokens import TokenCount, default_counter
from classifier.outcomes_io import iter_json_objects
from classifier.simulate.rules import Answer
from router.core.types import Arm
from router.errors import InvalidRequest

_NUMERIC = re.compile(r"^[-+]?\$?\s*(\d[\d,]*(\.\d*)?|\.\d+)([eE][-+]?\d+)?$")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class Sample:
    """One sampled answer: its normalised answer, its score and its output tokens."""

    answer: Answer
    score: float
    output_tokens: int


@dataclass(frozen=True)
class TierSamples:
    """The samples one tier drew for one prompt, and the tokens of one call's input."""

    input_tokens: int
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class PromptSamples:
    """One prompt with its samples per tier."""

    prompt_id: str
    prompt: str
    task: str | None
    tiers: dict[str, TierSamples]


def _number_key(x: float) -> str | None:
    if not math.isfinite(x):
        return None
    x = round(x, 6) + 0.0  # + 0.0 turns -0.0 into 0.0
    if x == int(x):
        return str(int(x))
    return f"{x:.6f}".rstrip("0").rstrip(".")


def answer_key(value: object) -> Answer:
    """The normalised form two answers are compared by; None for "no answer".

    Numbers (and strings that are only a number, with thousands commas or a leading
    ``$``) become their value rounded to 6 decimals, written without trailing zeros as
    the service's extractor writes them; other text is lowercased with runs of spaces
    collapsed.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return _number_key(float(value))
    text = _SPACES.sub(" ", str(value)).strip()
    if not text:
        return None
    if _NUMERIC.match(text):
        try:
            return _number_key(float(text.replace(",", "").replace("$", "").replace(" ", "")))
        except ValueError:
            pass
    return text.lower()


def _tier_of(row: dict[str, Any], where: str) -> str:
    tier = row.get("tier")
    if tier is None and isinstance(row.get("arm"), str):
        arm = str(row["arm"])
        tier = Arm.parse(arm).tier if "/" in arm else arm
    if not isinstance(tier, str) or not tier:
        raise InvalidRequest(f"{where}: field 'tier' (or 'arm') must be a non-empty string")
    try:
        Arm.parse(f"{tier}/greedy")
    except InvalidRequest:
        raise InvalidRequest(f"{where}: {tier!r} is not a valid tier name") from None
    return tier


def _count(value: Any, where: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidRequest(f"{where}: {what} must be an integer >= 0, got {value!r}")
    return value


def _score(value: Any, where: str) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InvalidRequest(f"{where}: 'score' must be a number in [0, 1], got {value!r}")
    return float(value)


@dataclass
class _RawSample:
    answer: Answer
    score: float | None
    output_tokens: int | None
    text: str | None


def _raw_samples(row: dict[str, Any], where: str) -> list[_RawSample]:
    from router.strategies.extract import auto

    samples = row.get("samples")
    if not isinstance(samples, list) or not samples:
        raise InvalidRequest(f"{where}: field 'samples' must be a non-empty list")
    out: list[_RawSample] = []
    for i, s in enumerate(samples):
        at = f"{where}: samples[{i}]"
        if not isinstance(s, dict):
            raise InvalidRequest(f"{at} must be an object")
        text = s.get("text")
        if text is not None and not isinstance(text, str):
            raise InvalidRequest(f"{at}: 'text' must be a string")
        if "answer" in s:
            answer = s["answer"]
            if answer is not None and not isinstance(answer, str | int | float):
                raise InvalidRequest(f"{at}: 'answer' must be a string, a number or null")
            key = answer_key(answer)
        elif text is not None:
            key = answer_key(auto(text))
        else:
            raise InvalidRequest(f"{at} has neither 'answer' nor 'text'")
        tokens = s.get("output_tokens")
        if tokens is None and text is None:
            raise InvalidRequest(f"{at} has neither 'output_tokens' nor 'text' to count")
        out.append(
            _RawSample(
                answer=key,
                score=None if s.get("score") is None else _score(s["score"], at),
                output_tokens=None if tokens is None else _count(tokens, at, "'output_tokens'"),
                text=text,
            )
        )
    return out


def read_samples_jsonl(
    path: Path, *, count_tokens: TokenCount | None = None
) -> tuple[list[PromptSamples], list[str]]:
    """(prompts in file order, tiers in order of first appearance) of a generic table.

    Errors name the file and line. A prompt may lack some tiers; callers keep the prompts
    that have every tier they need.
    """
    rows: list[tuple[str, dict[str, Any], str, list[_RawSample]]] = []
    seen: dict[tuple[str, str], str] = {}
    for lineno, row in iter_json_objects(path):
        where = f"{path}:{lineno}"
        for name in ("prompt_id", "prompt"):
            if not isinstance(row.get(name), str) or not row[name]:
                raise InvalidRequest(f"{where}: field {name!r} must be a non-empty string")
        tier = _tier_of(row, where)
        key = (row["prompt_id"], tier)
        if key in seen:
            raise InvalidRequest(
                f"{where}: prompt {key[0]!r} already has samples of tier {tier!r} ({seen[key]})"
            )
        seen[key] = where
        if row.get("task") is not None and not isinstance(row["task"], str):
            raise InvalidRequest(f"{where}: field 'task' must be a string")
        raw = _raw_samples(row, where)
        gold = row.get("gold", row.get("reference"))
        if gold is None and any(s.score is None for s in raw):
            raise InvalidRequest(
                f"{where}: no 'gold' (or 'reference') answer, and not every sample has a 'score'"
            )
        if row.get("input_tokens") is not None:
            _count(row["input_tokens"], where, "'input_tokens'")
        rows.append((where, row, tier, raw))
    if not rows:
        raise InvalidRequest(f"{path}: no rows")

    need_in = [r["prompt"] for _, r, _, _ in rows if r.get("input_tokens") is None]
    need_out = [s.text or "" for *_, raw in rows for s in raw if s.output_tokens is None]
    counter = count_tokens
    if (need_in or need_out) and counter is None:
        counter = default_counter()
    in_counts = iter(counter(need_in) if counter and need_in else [])
    out_counts = iter(counter(need_out) if counter and need_out else [])

    prompts: dict[str, PromptSamples] = {}
    tiers: list[str] = []
    for where, row, tier, raw in rows:
        n_in = row["input_tokens"] if row.get("input_tokens") is not None else next(in_counts)
        gold = answer_key(row.get("gold", row.get("reference")))
        samples = tuple(
            Sample(
                answer=s.answer,
                score=s.score
                if s.score is not None
                else float(s.answer is not None and s.answer == gold),
                output_tokens=s.output_tokens if s.output_tokens is not None else next(out_counts),
            )
            for s in raw
        )
        pid = row["prompt_id"]
        entry = prompts.get(pid)
        if entry is None:
            entry = prompts[pid] = PromptSamples(pid, row["prompt"], row.get("task"), {})
        elif entry.prompt != row["prompt"]:
            raise InvalidRequest(f"{where}: prompt {pid!r} has a different text on another line")
        entry.tiers[tier] = TierSamples(n_in, samples)
        if tier not in tiers:
            tiers.append(tier)
    return list(prompts.values()), tiers


__all__ = [
    "PromptSamples",
    "Sample",
    "TierSamples",
    "TokenCount",
    "answer_key",
    "read_samples_jsonl",
]
