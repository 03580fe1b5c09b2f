"""OpenAI grade-school-math (MIT) model solutions → a two-arm outcome set.

``grade_school_math/data/example_model_solutions.jsonl`` holds, for the 1319 GSM8K test
questions, a solution and ``is_correct`` for GPT-3 6B and 175B, each fine-tuned
(``*_finetuning``) or with a verifier (``*_verification``). Each chosen system becomes
an arm ``<tier>/greedy`` (default: ``gpt3-6b`` = 6b_finetuning, ``gpt3-175b`` =
175b_finetuning). Output tokens are counted from the stored solution and input tokens
from the question with the embedder's WordPiece tokenizer; ``cost_usd`` = tokens x the
tier's prices (defaults are illustrative stand-ins, not OpenAI's historical prices).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from classifier.importers.tokens import TokenCount, default_counter
from classifier.outcomes_io import OutcomeRecord, iter_json_objects
from router.core.types import Price
from router.errors import InvalidRequest

SOLUTIONS_FILE = Path("grade_school_math") / "data" / "example_model_solutions.jsonl"
SYSTEMS = ("6b_finetuning", "6b_verification", "175b_finetuning", "175b_verification")
DEFAULT_TIERS: dict[str, str] = {"gpt3-6b": "6b_finetuning", "gpt3-175b": "175b_finetuning"}
DEFAULT_PRICES: dict[str, Price] = {"gpt3-6b": Price(0.2, 0.2), "gpt3-175b": Price(6.0, 12.0)}
STRATEGY = "greedy"


def import_gsm8k_openai(
    gsm_dir: Path,
    *,
    tiers: Mapping[str, str] = DEFAULT_TIERS,
    prices: Mapping[str, Price] = DEFAULT_PRICES,
    count_tokens: TokenCount | None = None,
) -> list[OutcomeRecord]:
    """Records for every question, one per tier (``tiers`` maps tier → system)."""
    path = gsm_dir / SOLUTIONS_FILE
    bad_sys = [s for s in tiers.values() if s not in SYSTEMS]
    if bad_sys:
        raise InvalidRequest(f"unknown system(s) {bad_sys}; known: {list(SYSTEMS)}")
    no_price = [t for t in tiers if t not in prices]
    if no_price:
        raise InvalidRequest(f"no prices given for tier(s) {no_price}")
    rows: list[dict[str, object]] = []
    for lineno, row in iter_json_objects(path):
        if not isinstance(row.get("question"), str):
            raise InvalidRequest(f"{path}:{lineno}: no 'question' string")
        for system in tiers.values():
            entry = row.get(system)
            if not isinstance(entry, dict) or not isinstance(entry.get("is_correct"), bool):
                raise InvalidRequest(f"{path}:{lineno}: no '{system}.is_correct' boolean")
        row["_line"] = lineno
        rows.append(row)
    counter = count_tokens or default_counter()
    in_tok = counter([str(r["question"]) for r in rows])
    records: list[OutcomeRecord] = []
    for tier, system in tiers.items():
        sols = [str(r[system]["solution"]) for r in rows]  # type: ignore[index]
        out_tok = counter(sols)
        p = prices[tier]
        for r, ti, to in zip(rows, in_tok, out_tok, strict=True):
            records.append(
                OutcomeRecord(
                    prompt_id=f"gsm8k-openai/{r['_line']}",
                    prompt=str(r["question"]),
                    arm=f"{tier}/{STRATEGY}",
                    score=1.0 if r[system]["is_correct"] else 0.0,  # type: ignore[index]
                    cost_usd=(ti * p.input_per_mtok + to * p.output_per_mtok) / 1e6,
                    task="gsm8k",
                    input_tokens=ti,
                    output_tokens=to,
                    model=system,
                )
            )
    records.sort(key=lambda r: (len(r.prompt_id), r.prompt_id, r.arm))
    return records


__all__ = ["DEFAULT_PRICES", "DEFAULT_TIERS", "SYSTEMS", "import_gsm8k_openai"]
