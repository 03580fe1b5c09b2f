"""ZeroEval (Apache-2.0) raw outputs → full-information outcome records, one arm per tier.

Each tier stands in for one model's greedy run (arm ``<tier>/greedy``). Scores:
GSM8K and MATH level 5 take ``correct_firstnumber`` from the derived correctness table
(first number of the answer equals the first number of the gold answer); CRUXEval
(output prediction) is judged here from the raw files without running any code: the
model's answer and the gold output are both read as Python literals
(``ast.literal_eval``) and the record is correct when the values are equal, which is
what the benchmark's ``assert f(x) == <answer>`` checks; an answer that is not a literal,
or whose value differs, also counts when its bare text equals a string gold output.

Tokens are counted with a caller-given counter (the embedder's WordPiece tokenizer by
default), which only approximates the models' own tokenizers. Input tokens are those of
the user turn as sent (question plus ZeroEval's answer-format instruction); output
tokens those of the stored model output. ``cost_usd`` = tokens x per-tier prices.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from classifier.importers.tokens import TokenCount, default_counter
from classifier.outcomes_io import OutcomeRecord
from router.core.types import Price
from router.errors import InvalidRequest

#: Task key (folder under ``result_dirs``) → task name written into the records.
TASKS: dict[str, str] = {"gsm": "gsm8k", "math-l5": "math-l5", "crux": "cruxeval"}

DEFAULT_TIERS: dict[str, str] = {
    "local-7b": "Qwen2.5-7B-Instruct",
    "mid-32b": "Qwen2.5-32B-Instruct",
    "premium": "gpt-4o-2024-08-06",
}

#: Used only where a tier's model has no run for a task: ZeroEval has no GSM8K run of
#: Qwen2.5-7B/32B-Instruct, so Qwen2-7B-Instruct and gemma-2-27b-it stand in there.
DEFAULT_FALLBACKS: dict[str, dict[str, str]] = {
    "gsm": {"local-7b": "Qwen2-7B-Instruct", "mid-32b": "gemma-2-27b-it@together"},
}

DEFAULT_PRICES: dict[str, Price] = {
    "local-7b": Price(0.05, 0.10),
    "mid-32b": Price(0.40, 0.80),
    "premium": Price(2.50, 10.00),
}

ZEROEVAL_COMMIT = "570c6269a2e4930ee06a17e713fece1ba52cf1dd"
SCORING = (
    "GSM8K and MATH level 5: first number of the answer equals the first number of the gold "
    "answer (derived correctness table); CRUXEval: the answer's Python literal value equals "
    "the gold output's value (ast.literal_eval, no code executed), or its bare text equals a "
    "string gold output"
)
CORRECTNESS_CSV = Path("derived") / "zeroeval_gsm_mathl5_correctness.csv.gz"
STRATEGY = "greedy"


@dataclass(frozen=True)
class _Item:
    prompt_id: str
    prompt: str
    user_turn: str
    output: str
    score: float


def default_data_dir() -> Path:
    """``../shared/data`` next to the repository root."""
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def parse_tiers(spec: str) -> dict[str, str]:
    """``"local-7b=Qwen2.5-7B-Instruct,premium=gpt-4o-2024-08-06"`` → ``{tier: model}``."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        tier, sep, model = part.partition("=")
        if not sep or not tier.strip() or not model.strip():
            raise InvalidRequest(f"tier mapping {part!r} is not of the form <tier>=<model>")
        out[tier.strip()] = model.strip()
    if not out:
        raise InvalidRequest("tier mapping is empty")
    return out


def parse_prices(spec: str) -> dict[str, Price]:
    """``"local-7b=0.05/0.10,premium=2.5/10"`` → ``{tier: Price(in, out)}`` (USD per M tokens)."""
    out: dict[str, Price] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        tier, _, rest = part.partition("=")
        inp, slash, outp = rest.partition("/")
        try:
            price = Price(float(inp), float(outp))
        except ValueError:
            price = None
        if not slash or price is None or price.input_per_mtok < 0 or price.output_per_mtok < 0:
            raise InvalidRequest(
                f"price {part!r} is not of the form <tier>=<input $/M tokens>/<output $/M tokens>"
            )
        out[tier.strip()] = price
    return out


def extract_answer(output: str) -> object | None:
    """The ``answer`` of the first JSON object in a ZeroEval output, or None."""
    candidates: list[str] = []
    fenced = re.search(r"```(?:json)?\s*(\{.*?\})\s*```", output, re.S)
    if fenced:
        candidates.append(fenced.group(1))
    braces = re.search(r"\{.*\}", output, re.S)
    if braces:
        candidates.append(braces.group(0))
    for text in candidates:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "answer" in obj:
            found: object = obj["answer"]
            return found
    loose = re.search(r'"answer"\s*:\s*"((?:[^"\\]|\\.)*)"', output, re.S)
    if loose:
        try:
            value: object = json.loads(f'"{loose.group(1)}"')
        except json.JSONDecodeError:
            value = loose.group(1)
        return value
    return None


def _literal(text: str) -> tuple[bool, Any]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return True, ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            return False, None


def judge_crux(answer: object | None, gold: str) -> float:
    """1.0 when the answer's value equals the gold output's value, else 0.0 (no code runs).

    Answer text that is not a Python literal, or is a literal other than a number, a bool
    or None (``6,8,8`` reads as a tuple), also counts when it equals a string gold output.
    """
    if answer is None:
        return 0.0
    ok_gold, gold_value = _literal(gold)
    bare_allowed = isinstance(answer, str)
    if isinstance(answer, str):
        ok, value = _literal(answer)
        if not ok:
            value = answer.strip()
        elif value is None or isinstance(value, int | float | complex):
            bare_allowed = False
    else:
        value = answer
    if not ok_gold:
        return 1.0 if isinstance(answer, str) and answer.strip() == gold.strip() else 0.0
    try:
        if bool(value == gold_value):
            return 1.0
    except Exception:
        pass
    if bare_allowed and isinstance(gold_value, str) and isinstance(answer, str):
        return 1.0 if answer.strip() == gold_value else 0.0
    return 0.0


def _load_raw(zeroeval_dir: Path, task: str, model: str) -> list[dict[str, Any]]:
    path = zeroeval_dir / "result_dirs" / task / f"{model}.json.gz"
    if not path.is_file():
        folder = path.parent
        known = sorted(p.name.removesuffix(".json.gz") for p in folder.glob("*.json.gz"))
        raise InvalidRequest(
            f"no ZeroEval {task} run for model {model!r} ({path} is missing); "
            f"models with {task} runs: {', '.join(known) or 'none'}"
        )
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"{path}: cannot read ZeroEval results: {exc}") from None
    if not isinstance(data, list):
        raise InvalidRequest(f"{path}: expected a JSON list of items")
    return data


def _load_correctness(zeroeval_dir: Path) -> dict[tuple[str, str, str], float]:
    path = zeroeval_dir / CORRECTNESS_CSV
    try:
        with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
            return {
                (row["task"], row["model"], row["id"]): float(row["correct_firstnumber"])
                for row in csv.DictReader(handle)
            }
    except (OSError, KeyError, ValueError) as exc:
        raise InvalidRequest(f"{path}: cannot read the correctness table: {exc}") from None


def _items(
    zeroeval_dir: Path,
    task: str,
    model: str,
    correctness: Mapping[tuple[str, str, str], float],
) -> dict[str, _Item]:
    items: dict[str, _Item] = {}
    for raw in _load_raw(zeroeval_dir, task, model):
        raw_id = str(raw["id"])
        prompt = raw.get("question") or raw.get("problem")
        outputs = raw.get("output") or [""]
        history = raw.get("chat_history") or [prompt]
        if not isinstance(prompt, str) or not prompt.strip():
            continue
        output = outputs[0] if isinstance(outputs[0], str) else ""
        if task == "crux":
            score = judge_crux(extract_answer(output), str(raw["answer"]))
        else:
            key = (task, model, raw_id)
            if key not in correctness:
                continue
            score = correctness[key]
        items[raw_id] = _Item(
            prompt_id=f"zeroeval/{task}/{raw_id}",
            prompt=prompt,
            user_turn=str(history[-1]),
            output=output,
            score=score,
        )
    return items


def _has_run(zeroeval_dir: Path, task: str, model: str) -> bool:
    return (zeroeval_dir / "result_dirs" / task / f"{model}.json.gz").is_file()


def _model_for(
    zeroeval_dir: Path,
    task: str,
    tier: str,
    model: str,
    fallbacks: Mapping[str, Mapping[str, str]],
) -> str:
    if _has_run(zeroeval_dir, task, model):
        return model
    return fallbacks.get(task, {}).get(tier, model)


def resolve_models(
    data_dir: Path | None = None,
    *,
    tiers: Mapping[str, str] = DEFAULT_TIERS,
    fallbacks: Mapping[str, Mapping[str, str]] = DEFAULT_FALLBACKS,
    tasks: Sequence[str] = tuple(TASKS),
) -> dict[str, dict[str, str]]:
    """The ZeroEval model each tier uses for each task: ``{task: {tier: model}}``."""
    zeroeval_dir = (data_dir or default_data_dir()) / "zeroeval"
    return {
        task: {t: _model_for(zeroeval_dir, task, t, m, fallbacks) for t, m in tiers.items()}
        for task in tasks
    }


def import_zeroeval(
    data_dir: Path | None = None,
    *,
    tiers: Mapping[str, str] = DEFAULT_TIERS,
    fallbacks: Mapping[str, Mapping[str, str]] = DEFAULT_FALLBACKS,
    prices: Mapping[str, Price] = DEFAULT_PRICES,
    tasks: Sequence[str] = tuple(TASKS),
    count_tokens: TokenCount | None = None,
) -> list[OutcomeRecord]:
    """Outcome records for every prompt that all tiers answered, ordered by task, prompt, tier.

    ``data_dir`` holds ``zeroeval/`` (default :func:`default_data_dir`); ``tiers`` maps tier →
    ZeroEval model name; ``fallbacks[task][tier]`` names the model used where the tier's
    model has no run for that task (see :data:`DEFAULT_FALLBACKS`); ``prices`` are USD per million
    input/output tokens per tier; ``count_tokens`` maps texts to token counts.
    """
    zeroeval_dir = (data_dir or default_data_dir()) / "zeroeval"
    if not zeroeval_dir.is_dir():
        raise InvalidRequest(f"ZeroEval data not found at {zeroeval_dir}")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise InvalidRequest(f"unknown ZeroEval task(s) {unknown}; known: {sorted(TASKS)}")
    missing_prices = [t for t in tiers if t not in prices]
    if missing_prices:
        raise InvalidRequest(f"no prices given for tier(s) {missing_prices}")
    counter = count_tokens or default_counter()
    correctness = _load_correctness(zeroeval_dir) if set(tasks) & {"gsm", "math-l5"} else {}

    records: list[OutcomeRecord] = []
    for task in tasks:
        models = {
            tier: _model_for(zeroeval_dir, task, tier, tiers[tier], fallbacks) for tier in tiers
        }
        per_tier = {tier: _items(zeroeval_dir, task, models[tier], correctness) for tier in tiers}
        common = set.intersection(*(set(v) for v in per_tier.values()))
        order = sorted(common, key=lambda k: (len(k), k))
        for tier in tiers:
            items = [per_tier[tier][k] for k in order]
            in_tok = counter([it.user_turn for it in items])
            out_tok = counter([it.output for it in items])
            price = prices[tier]
            for it, ti, to in zip(items, in_tok, out_tok, strict=True):
                records.append(
                    OutcomeRecord(
                        prompt_id=it.prompt_id,
                        prompt=it.prompt,
                        arm=f"{tier}/{STRATEGY}",
                        score=it.score,
                        cost_usd=(ti * price.input_per_mtok + to * price.output_per_mtok) / 1e6,
                        task=TASKS[task],
                        input_tokens=ti,
                        output_tokens=to,
                        model=models[tier],
                    )
                )
    records.sort(key=lambda r: (tasks.index(_task_key(r)), _natural(r.prompt_id), r.arm))
    return records


def _task_key(record: OutcomeRecord) -> str:
    return record.prompt_id.split("/", 2)[1]


def _natural(prompt_id: str) -> tuple[int, str]:
    return (len(prompt_id), prompt_id)


__all__ = [
    "DEFAULT_FALLBACKS",
    "DEFAULT_PRICES",
    "DEFAULT_TIERS",
    "SCORING",
    "TASKS",
    "ZEROEVAL_COMMIT",
    "default_data_dir",
    "extract_answer",
    "import_zeroeval",
    "judge_crux",
    "parse_prices",
    "parse_tiers",
    "resolve_models",
]
