"""LLM MoT-cascade sampled outputs (GPT-4, Llama-2-13B) → a multi-sample table.

Source: ``mot-cascade/<model>_result/<task>_<variant>.json.gz`` (``_V2`` suffix for the
Llama-2 CREPE files), each a JSON list of ``{question, answer (gold), generated
(k sampled completions), results (their extracted answers)}``. The set has no licence:
it may be read for evaluation and tests, and nothing built from it ships with the project.

Each tier reads one model's file of the same task and variant (default ``gsm``,
``pot1``: program-of-thought, first demonstration set). Prompts are matched across the
tiers by question text and occurrence (CREPE repeats questions; its files list them in
the same order), kept in the first tier's order and named
``mot-cascade/<task>/<index in the first tier's file>``.

Programs that failed to run have no extracted answer, and the files keep only the
answers of those that ran without saying which failed. Where a row has fewer answers than
completions, the answers go to the first samples, the remaining samples have no answer,
and every sample of the row gets the row's mean output tokens (the row's total stays
exact); elsewhere answer i belongs to completion i.

Tokens are counted with a caller-given counter (the embedder's WordPiece tokenizer by
default), which only approximates the models' own tokenizers. Input tokens are those of
the question alone: the few-shot demonstrations the models were given are not stored.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from classifier.importers.tokens import TokenCount, default_counter
from classifier.simulate.samples import PromptSamples, Sample, TierSamples, answer_key
from router.core.types import Price
from router.errors import InvalidRequest

MOT_CASCADE_COMMIT = "8db97e652d196ce6380927c3b4df8af6d6c09746"
DEFAULT_TIERS: dict[str, str] = {"cheap": "llama2_13B", "strong": "GPT4"}
#: Illustrative list prices (USD per million input/output tokens) of the two models'
#: era: a hosted 13B model, and GPT-4 (8k context).
DEFAULT_PRICES: dict[str, Price] = {"llama2_13B": Price(0.20, 0.20), "GPT4": Price(30.0, 60.0)}
DEFAULT_TASK = "gsm"
DEFAULT_VARIANT = "pot1"
TASK_NAMES: dict[str, str] = {"gsm": "gsm8k"}


def _file(mot_dir: Path, model: str, task: str, variant: str) -> Path:
    folder = mot_dir / f"{model}_result"
    if not folder.is_dir():
        known = sorted(p.name.removesuffix("_result") for p in mot_dir.glob("*_result"))
        raise InvalidRequest(
            f"no MoT-cascade results for model {model!r} ({folder} is missing); "
            f"models: {', '.join(known) or 'none'}"
        )
    for stem in (f"{task}_{variant}", f"{task}_{variant}_V2"):
        path = folder / f"{stem}.json.gz"
        if path.is_file():
            return path
    known = sorted(p.name.removesuffix(".json.gz") for p in folder.glob("*.json.gz"))
    raise InvalidRequest(
        f"model {model!r} has no {task} {variant} file in {folder}; files: {', '.join(known)}"
    )


def _load(path: Path) -> list[dict[str, Any]]:
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, EOFError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"{path}: cannot read MoT-cascade results: {exc}") from None
    if not isinstance(data, list):
        raise InvalidRequest(f"{path}: expected a JSON list of rows")
    for i, row in enumerate(data):
        ok = (
            isinstance(row, dict)
            and isinstance(row.get("question"), str)
            and isinstance(row.get("generated"), list)
            and isinstance(row.get("results"), list)
            and "answer" in row
        )
        if not ok:
            raise InvalidRequest(
                f"{path}: row {i} lacks 'question', 'answer', 'generated' or 'results'"
            )
        if len(row["results"]) > len(row["generated"]):
            raise InvalidRequest(f"{path}: row {i} has more results than completions")
    return data


def _keyed(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, int], int]:
    """(question, occurrence) → row index."""
    seen: dict[str, int] = {}
    out: dict[tuple[str, int], int] = {}
    for i, row in enumerate(rows):
        q = row["question"]
        n = seen.get(q, 0)
        seen[q] = n + 1
        out[(q, n)] = i
    return out


def _samples(row: dict[str, Any], tokens: Sequence[int]) -> tuple[Sample, ...]:
    texts, results = row["generated"], row["results"]
    gold = answer_key(row["answer"])
    answers = [answer_key(r) for r in results] + [None] * (len(texts) - len(results))
    if len(results) != len(texts):
        total = sum(tokens)
        share, extra = divmod(total, len(texts))
        tokens = [share + (1 if i < extra else 0) for i in range(len(texts))]
    return tuple(
        Sample(answer=a, score=float(a is not None and a == gold), output_tokens=t)
        for a, t in zip(answers, tokens, strict=True)
    )


def import_mot_cascade(
    mot_dir: Path,
    *,
    tiers: Mapping[str, str] = DEFAULT_TIERS,
    task: str = DEFAULT_TASK,
    variant: str = DEFAULT_VARIANT,
    count_tokens: TokenCount | None = None,
    limit: int | None = None,
) -> list[PromptSamples]:
    """The prompts every tier's file has (at most ``limit``), with each tier's samples.

    ``mot_dir`` is the ``mot-cascade`` folder; ``tiers`` maps tier → model folder prefix
    (``llama2_13B``, ``GPT4``).
    """
    if not mot_dir.is_dir():
        raise InvalidRequest(f"MoT-cascade data not found at {mot_dir}")
    if not tiers:
        raise InvalidRequest("no tiers given")
    files = {tier: _file(mot_dir, model, task, variant) for tier, model in tiers.items()}
    data = {tier: _load(path) for tier, path in files.items()}
    keyed = {tier: _keyed(rows) for tier, rows in data.items()}
    first = next(iter(tiers))
    common = [
        key
        for key, _ in sorted(keyed[first].items(), key=lambda kv: kv[1])
        if all(key in k for k in keyed.values())
    ]
    if limit is not None:
        common = common[: max(limit, 0)]
    if not common:
        raise InvalidRequest(f"the tiers' {task} {variant} files share no questions")
    counter = count_tokens or default_counter()
    questions = [q for q, _ in common]
    in_tok = counter(questions)
    per_tier: dict[str, list[TierSamples]] = {}
    for tier in tiers:
        rows = [data[tier][keyed[tier][key]] for key in common]
        texts = [str(t) for r in rows for t in r["generated"]]
        out_tok = iter(counter(texts))
        per_tier[tier] = [
            TierSamples(n_in, _samples(r, [next(out_tok) for _ in r["generated"]]))
            for r, n_in in zip(rows, in_tok, strict=True)
        ]
    task_name = TASK_NAMES.get(task, task)
    return [
        PromptSamples(
            prompt_id=f"mot-cascade/{task}/{keyed[first][key]}",
            prompt=key[0],
            task=task_name,
            tiers={tier: per_tier[tier][i] for tier in tiers},
        )
        for i, key in enumerate(common)
    ]


__all__ = [
    "DEFAULT_PRICES",
    "DEFAULT_TASK",
    "DEFAULT_TIERS",
    "DEFAULT_VARIANT",
    "MOT_CASCADE_COMMIT",
    "import_mot_cascade",
]
