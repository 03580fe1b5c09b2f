"""AlpacaEval 2.0 (Apache-2.0) judge preferences → graded outcome records, one arm per tier.

Source: ``alpaca-eval/derived/`` in the shared data, derived from tatsu-lab/alpaca_eval
(commit ``cd543a1``; Apache-2.0 for the code, the model outputs come from many submitters).
``alpaca_eval_weighted_gpt4turbo_preferences.csv.gz`` holds, for 60 models x 805
instructions, the weighted GPT-4-turbo judge's preference between the reference answer
(gpt4_1106_preview, ``generator_1``) and the model's answer (``generator_2``), and
``alpaca_eval_model_output_lengths.csv.gz`` the full length of each instruction.

Each chosen model (column ``results_dir_model``) becomes the arm ``<tier>/greedy``
(default: ``tiny-1b``, ``small-3b``, ``mid-9b`` = the FuseChat Llama-3.2-1B, Llama-3.2-3B and
Gemma-2-9B instruct models). ``score`` = preference − 1, graded in [0, 1]: the judge's
probability that the model's answer is preferred to GPT-4-turbo's. An empty preference is
not observed and gives no record. The prompt is ``instruction_prefix200``: the derived table
keeps only the first 200 characters of each instruction, so longer prompts are cut short.
``prompt_id`` is ``alpaca-eval/<row_index>``, ``task`` the ``dataset`` column. A model with
several rows for one instruction (vicuna-13b-v1.5) gives one record per row.

Tokens are estimated from character counts, as the table holds no answer texts: one
characters-per-token ratio is measured on the distinct instruction prefixes of the whole
table with the embedder's WordPiece tokenizer (or a caller-given counter); output tokens =
``output_2_chars`` / ratio and input tokens = the instruction's full length in characters
/ ratio, each rounded and at least 1. ``cost_usd`` = tokens x the tier's prices; the
default prices are illustrative stand-ins, not any provider's price list.

``row_index`` is the row's position in each model's annotation file. Where a model's file
lacks instructions (alpaca-7b_concise, alpaca-7b_verbose, gpt35_turbo_instruct,
minotaur-13b, phi-2, text_davinci_001) the positions after the gap belong to other
instructions than the same positions of other models; tiers whose rows name different
instructions at one ``row_index`` are refused.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from classifier.importers.tokens import TokenCount, default_counter
from classifier.outcomes_io import OutcomeRecord
from router.core.types import Price
from router.errors import InvalidRequest

ALPACA_EVAL_COMMIT = "cd543a149df89434d8a54582c0151c0b945c3d20"
PREFERENCES_FILE = Path("derived") / "alpaca_eval_weighted_gpt4turbo_preferences.csv.gz"
LENGTHS_FILE = Path("derived") / "alpaca_eval_model_output_lengths.csv.gz"
PREFERENCE_COLUMNS = (
    "results_dir_model",
    "dataset",
    "row_index",
    "instruction_prefix200",
    "preference",
    "output_2_chars",
)
LENGTH_COLUMNS = ("results_dir_model", "row_index", "instruction_chars")
DEFAULT_TIERS: dict[str, str] = {
    "tiny-1b": "FuseChat-Llama-3.2-1B-Instruct",
    "small-3b": "FuseChat-Llama-3.2-3B-Instruct",
    "mid-9b": "FuseChat-Gemma-2-9B-Instruct",
}
DEFAULT_PRICES: dict[str, Price] = {
    "tiny-1b": Price(0.03, 0.06),
    "small-3b": Price(0.06, 0.12),
    "mid-9b": Price(0.20, 0.40),
}
STRATEGY = "greedy"


@dataclass(frozen=True)
class _Row:
    line: int
    model: str
    task: str
    index: int
    prompt: str
    preference: float | None
    output_chars: int


def _csv_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(first line of the row, row) for each row of a gzipped CSV; the header is line 1."""
    if not path.is_file():
        raise InvalidRequest(f"AlpacaEval table not found at {path}")
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise InvalidRequest(f"{path}: empty file, no header")
            missing = [c for c in required if c not in header]
            if missing:
                raise InvalidRequest(f"{path}:1: missing column(s) {missing}")
            line = reader.line_num + 1
            for values in reader:
                if values:
                    if len(values) != len(header):
                        raise InvalidRequest(
                            f"{path}:{line}: {len(values)} fields, the header has {len(header)}"
                        )
                    yield line, dict(zip(header, values, strict=True))
                line = reader.line_num + 1
    except (OSError, EOFError, UnicodeDecodeError, csv.Error, zlib.error) as exc:
        raise InvalidRequest(f"{path}: cannot read the AlpacaEval table: {exc}") from None


def _count(path: Path, line: int, column: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise InvalidRequest(f"{path}:{line}: {column} {raw!r} is not a non-negative integer")
    return value


def _preference(path: Path, line: int, raw: str) -> float | None:
    if not raw.strip():
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"{path}:{line}: preference {raw!r} is not a number") from None
    if not 1.0 <= value <= 2.0:
        raise InvalidRequest(f"{path}:{line}: preference {raw!r} is outside [1, 2]")
    return value


def chars_per_token(texts: Sequence[str], count_tokens: TokenCount) -> float:
    """Total characters of ``texts`` over their total token count."""
    tokens = sum(count_tokens(list(texts)))
    if tokens <= 0:
        raise InvalidRequest("the token counter gave no tokens for the AlpacaEval instructions")
    return sum(len(t) for t in texts) / tokens


def _check_aligned(path: Path, rows: Sequence[_Row]) -> None:
    first: dict[int, _Row] = {}
    for r in rows:
        seen = first.setdefault(r.index, r)
        if (seen.prompt, seen.task) != (r.prompt, r.task):
            raise InvalidRequest(
                f"{path}:{r.line}: row_index {r.index} of {r.model!r} is another instruction "
                f"than row_index {r.index} of {seen.model!r} (line {seen.line}); this model's "
                "annotation file lacks instructions, so its rows cannot be paired with others"
            )


def import_alpaca_eval(
    alpaca_dir: Path,
    *,
    tiers: Mapping[str, str] = DEFAULT_TIERS,
    prices: Mapping[str, Price] = DEFAULT_PRICES,
    count_tokens: TokenCount | None = None,
) -> list[OutcomeRecord]:
    """Records for every observed preference of the chosen models, ordered by row, arm.

    ``tiers`` maps tier → ``results_dir_model``; ``prices`` are USD per million input/output
    tokens per tier; ``count_tokens`` maps texts to token counts (it only sets the
    characters-per-token ratio).
    """
    if not alpaca_dir.is_dir():
        raise InvalidRequest(f"AlpacaEval data not found at {alpaca_dir}")
    no_price = [t for t in tiers if t not in prices]
    if no_price:
        raise InvalidRequest(f"no prices given for tier(s) {no_price}")
    pref_path = alpaca_dir / PREFERENCES_FILE
    wanted = set(tiers.values())
    known: set[str] = set()
    prefixes: set[str] = set()
    rows: list[_Row] = []
    for line, row in _csv_rows(pref_path, PREFERENCE_COLUMNS):
        model = row["results_dir_model"]
        known.add(model)
        prefixes.add(row["instruction_prefix200"])
        if model not in wanted:
            continue
        if not row["instruction_prefix200"].strip():
            raise InvalidRequest(f"{pref_path}:{line}: empty instruction_prefix200")
        rows.append(
            _Row(
                line=line,
                model=model,
                task=row["dataset"],
                index=_count(pref_path, line, "row_index", row["row_index"]),
                prompt=row["instruction_prefix200"],
                preference=_preference(pref_path, line, row["preference"]),
                output_chars=_count(pref_path, line, "output_2_chars", row["output_2_chars"]),
            )
        )
    unknown = sorted(wanted - known)
    if unknown:
        raise InvalidRequest(
            f"{pref_path}: no rows for model(s) {unknown}; known models: {', '.join(sorted(known))}"
        )
    _check_aligned(pref_path, rows)

    len_path = alpaca_dir / LENGTHS_FILE
    instruction_chars: dict[tuple[str, int], int] = {}
    for line, row in _csv_rows(len_path, LENGTH_COLUMNS):
        if row["results_dir_model"] in wanted:
            index = _count(len_path, line, "row_index", row["row_index"])
            chars = _count(len_path, line, "instruction_chars", row["instruction_chars"])
            instruction_chars[(row["results_dir_model"], index)] = chars

    ratio = chars_per_token(sorted(prefixes), count_tokens or default_counter())
    tiers_of: dict[str, list[str]] = {}
    for tier, model in tiers.items():
        tiers_of.setdefault(model, []).append(tier)
    keyed: list[tuple[int, str, OutcomeRecord]] = []
    for r in rows:
        if r.preference is None:
            continue
        in_chars = instruction_chars.get((r.model, r.index), len(r.prompt))
        ti = max(1, round(in_chars / ratio))
        to = max(1, round(r.output_chars / ratio))
        for tier in tiers_of[r.model]:
            p = prices[tier]
            arm = f"{tier}/{STRATEGY}"
            record = OutcomeRecord(
                prompt_id=f"alpaca-eval/{r.index}",
                prompt=r.prompt,
                arm=arm,
                score=r.preference - 1.0,
                cost_usd=(ti * p.input_per_mtok + to * p.output_per_mtok) / 1e6,
                task=r.task or None,
                input_tokens=ti,
                output_tokens=to,
                model=r.model,
            )
            keyed.append((r.index, arm, record))
    keyed.sort(key=lambda k: (k[0], k[1]))
    return [k[2] for k in keyed]


__all__ = [
    "ALPACA_EVAL_COMMIT",
    "DEFAULT_PRICES",
    "DEFAULT_TIERS",
    "chars_per_token",
    "import_alpaca_eval",
]
