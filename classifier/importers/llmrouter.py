"""LLMRouter (MIT) 9-model score table → full-information outcome records.

Source: ``llmrouter/data/dcrouter_preprocessed/{train,test}.json`` (rows of
``{"question", "scores": {model: score}}``, scores in [0, 1], some graded) and the
per-model prices of ``llmrouter/data/example_data/llm_candidates/default_llm.json`` (USD
per million input and output tokens). Each model becomes the arm ``<model>/greedy``.

The table carries no outputs and no token counts. Input tokens are counted from the
question with the embedder's WordPiece tokenizer; output tokens are *not observed*, so
records carry no ``output_tokens`` and ``cost_usd`` assumes ``assumed_output_tokens``
(default 256) output tokens per answer. Costs therefore vary only with the question's
length and the model's price; say so wherever these figures are quoted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from classifier.importers.tokens import TokenCount, default_counter
from classifier.outcomes_io import OutcomeRecord
from router.core.types import Price
from router.errors import InvalidRequest

LLMROUTER_COMMIT = "4e7a796942ce26e9d5f2b93191c7c2585c99c2e3"
SPLITS = ("train", "test")
STRATEGY = "greedy"
DEFAULT_ASSUMED_OUTPUT_TOKENS = 256
TABLE_DIR = Path("data") / "dcrouter_preprocessed"
PRICES_FILE = Path("data") / "example_data" / "llm_candidates" / "default_llm.json"


def load_prices(llmrouter_dir: Path) -> dict[str, Price]:
    """Model → Price from ``default_llm.json``."""
    path = llmrouter_dir / PRICES_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"{path}: cannot read the LLMRouter price list: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest(f"{path}: expected a JSON object of models")
    out: dict[str, Price] = {}
    for model, entry in data.items():
        try:
            out[model] = Price(float(entry["input_price"]), float(entry["output_price"]))
        except (KeyError, TypeError, ValueError):
            raise InvalidRequest(f"{path}: model {model!r} has no numeric prices") from None
    return out


def _load_rows(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidRequest(f"{path}: cannot read the LLMRouter table: {exc}") from None
    if not isinstance(data, list):
        raise InvalidRequest(f"{path}: expected a JSON list of rows")
    for i, row in enumerate(data):
        if not isinstance(row, dict) or not isinstance(row.get("question"), str):
            raise InvalidRequest(f"{path}: row {i} has no 'question' string")
        if not isinstance(row.get("scores"), dict):
            raise InvalidRequest(f"{path}: row {i} has no 'scores' object")
    return data


def import_llmrouter(
    llmrouter_dir: Path,
    *,
    models: Sequence[str] | None = None,
    splits: Sequence[str] = SPLITS,
    prices: Mapping[str, Price] | None = None,
    assumed_output_tokens: int = DEFAULT_ASSUMED_OUTPUT_TOKENS,
    count_tokens: TokenCount | None = None,
) -> list[OutcomeRecord]:
    """Records for the chosen models (default: every model in the table) and splits.

    ``prices`` overrides the price list per model; the prompt id is
    ``llmrouter/<split>/<row>``, the task is ``llmrouter-<split>``.
    """
    if not llmrouter_dir.is_dir():
        raise InvalidRequest(f"LLMRouter data not found at {llmrouter_dir}")
    if assumed_output_tokens < 1:
        raise InvalidRequest(
            f"assumed output tokens must be at least 1, got {assumed_output_tokens}"
        )
    price_list = dict(load_prices(llmrouter_dir))
    price_list.update(prices or {})
    counter = count_tokens or default_counter()
    records: list[OutcomeRecord] = []
    for split in splits:
        if split not in SPLITS:
            raise InvalidRequest(f"unknown LLMRouter split {split!r}; known: {list(SPLITS)}")
        path = llmrouter_dir / TABLE_DIR / f"{split}.json"
        rows = _load_rows(path)
        chosen = list(models) if models else sorted(rows[0]["scores"]) if rows else []
        no_price = [m for m in chosen if m not in price_list]
        if no_price:
            raise InvalidRequest(f"no price for model(s) {no_price} (give --prices)")
        in_tok = counter([r["question"] for r in rows])
        for i, (row, ti) in enumerate(zip(rows, in_tok, strict=True)):
            for m in chosen:
                if m not in row["scores"]:
                    raise InvalidRequest(f"{path}: row {i} has no score for model {m!r}")
                score = row["scores"][m]
                if isinstance(score, bool) or not isinstance(score, int | float):
                    raise InvalidRequest(f"{path}: row {i}: score of {m!r} is not a number")
                p = price_list[m]
                cost = (ti * p.input_per_mtok + assumed_output_tokens * p.output_per_mtok) / 1e6
                records.append(
                    OutcomeRecord(
                        prompt_id=f"llmrouter/{split}/{i}",
                        prompt=row["question"],
                        arm=f"{m}/{STRATEGY}",
                        score=float(score),
                        cost_usd=cost,
                        task=f"llmrouter-{split}",
                        input_tokens=ti,
                        model=m,
                    )
                )
    return records


__all__ = [
    "DEFAULT_ASSUMED_OUTPUT_TOKENS",
    "LLMROUTER_COMMIT",
    "import_llmrouter",
    "load_prices",
]
