"""A generic score table (CSV, JSON Lines or Parquet, one row per prompt) → outcome records.

Columns (CSV header or JSON keys):

* ``prompt`` (required), ``prompt_id`` (default: ``<file stem>/<line>``), ``task``;
* one score column per arm, named as the arm (``<tier>/<strategy>``, e.g.
  ``local-7b/vote@5``), values in [0, 1] or on any other scale (``classifier.score_scale``);
  every column whose name is an arm counts,
  or only those given in ``arms``;
* optional per arm: ``<arm>:cost_usd``, ``<arm>:output_tokens``, ``<arm>:input_tokens``.

``cost_usd`` comes from the cost column when present; otherwise from ``prices`` (per
tier, USD per million tokens) x (input tokens, counted from the prompt when not given,
plus output tokens); token columns are totals over an arm's samples, as in the spec. A
row without a cost and without the tokens and price to compute one is an error. Errors
name the file and line.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from classifier.importers.tokens import TokenCount
from classifier.outcomes_io import OutcomeRecord, is_parquet, iter_json_objects
from router.core.types import Arm, Price
from router.errors import InvalidRequest

SUFFIXES = (":cost_usd", ":output_tokens", ":input_tokens")


def _rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, row) of a CSV (header on line 1) or JSON Lines file; (row number,
    row) of a Parquet file."""
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson") or is_parquet(path):
        yield from iter_json_objects(path)
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidRequest(f"{path}: cannot open: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InvalidRequest(
            f"{path}:{line}: not UTF-8 text; give a CSV or JSON Lines file in UTF-8, or Parquet"
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for row in reader:
        yield reader.line_num, dict(row)


def _is_arm(name: str) -> bool:
    try:
        Arm.parse(name)
    except InvalidRequest:
        return False
    return True


def _number(value: Any, where: str, what: str, lo: float, hi: float) -> float:
    if isinstance(value, bool):
        raise InvalidRequest(f"{where}: {what} must be a number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InvalidRequest(f"{where}: {what} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise InvalidRequest(f"{where}: {what} must be a finite number, got {value!r}")
    if not lo <= x <= hi:
        raise InvalidRequest(f"{where}: {what} must be in [{lo:g}, {hi:g}], got {value!r}")
    return x


def _optional(row: Mapping[str, Any], key: str) -> Any:
    value = row.get(key)
    return None if value is None or value == "" else value


def import_table(
    path: Path,
    *,
    arms: Sequence[str] | None = None,
    prices: Mapping[str, Price] | None = None,
    count_tokens: TokenCount | None = None,
) -> list[OutcomeRecord]:
    """Records of every (row, arm) pair of the table."""
    rows = list(_rows(path))
    if not rows:
        raise InvalidRequest(f"{path}: the table has no rows")
    first_line, first = rows[0]
    columns = list(first)
    if "prompt" not in columns:
        raise InvalidRequest(f"{path}:{first_line}: required column 'prompt' is missing")
    if arms:
        arm_cols = list(arms)
        for a in arm_cols:
            Arm.parse(a)
    else:
        arm_cols = [c for c in columns if _is_arm(c)]
    if not arm_cols:
        raise InvalidRequest(
            f"{path}:{first_line}: no arm score columns (columns named <tier>/<strategy>)"
        )
    prices = prices or {}
    need_count = [
        a for a in arm_cols if f"{a}:cost_usd" not in columns and f"{a}:input_tokens" not in columns
    ]
    counts: list[int] = [0] * len(rows)
    if need_count:
        if count_tokens is None:
            from classifier.features import default_token_counter

            count_tokens = default_token_counter().count_batch
        counts = count_tokens([str(r.get("prompt", "")) for _, r in rows])
    records: list[OutcomeRecord] = []
    for (lineno, row), n_in in zip(rows, counts, strict=True):
        where = f"{path}:{lineno}"
        prompt = row.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise InvalidRequest(f"{where}: column 'prompt' is missing or empty")
        pid = _optional(row, "prompt_id")
        prompt_id = str(pid) if pid is not None else f"{path.stem}/{lineno}"
        task = _optional(row, "task")
        for a in arm_cols:
            if a not in row:
                raise InvalidRequest(f"{where}: score column {a!r} is missing")
            raw = _optional(row, a)
            if raw is None:
                continue
            score = _number(raw, where, f"score of {a!r}", -math.inf, math.inf)
            out_raw = _optional(row, f"{a}:output_tokens")
            in_raw = _optional(row, f"{a}:input_tokens")
            out_tok = None if out_raw is None else int(_number(out_raw, where, "tokens", 0, 1e12))
            in_tok = n_in if in_raw is None else int(_number(in_raw, where, "tokens", 0, 1e12))
            cost_raw = _optional(row, f"{a}:cost_usd")
            if cost_raw is not None:
                cost = _number(cost_raw, where, f"cost of {a!r}", 0.0, math.inf)
            else:
                price = prices.get(Arm.parse(a).tier)
                if price is None or out_tok is None:
                    raise InvalidRequest(
                        f"{where}: arm {a!r} has no '{a}:cost_usd' value; give one, or "
                        f"'{a}:output_tokens' and a price for tier {Arm.parse(a).tier!r}"
                    )
                cost = (in_tok * price.input_per_mtok + out_tok * price.output_per_mtok) / 1e6
            records.append(
                OutcomeRecord(
                    prompt_id=prompt_id,
                    prompt=prompt,
                    arm=a,
                    score=score,
                    cost_usd=cost,
                    task=None if task is None else str(task),
                    input_tokens=in_tok if (in_raw is not None or need_count) else None,
                    output_tokens=out_tok,
                )
            )
    return records


__all__ = ["import_table"]
