"""Synthetic outcome records for the train/predict scale benchmark.

    python benchmarks/make_scale_outcomes.py --out scale.jsonl [--n 10000] [--data ../shared/data]
    /usr/bin/time -v ttc-router train --outcomes scale.jsonl --out m-scale --seed 0
    /usr/bin/time -v ttc-router predict --model m-scale --prompts scale.jsonl --out pred.jsonl

``--few-shot K`` puts a K-shot prefix of worked GSM8K examples (question and answer) in
front of every question, one of ``--prefixes`` distinct prefixes per prompt: the long,
prefix-sharing prompts of few-shot evaluation suites (8 shots are about 4,000 characters).

Real prompt texts (distinct LLMRouter and GSM8K questions from ``../shared/data``) with
synthetic scores for 11 arms (8 greedy tiers + 3 ``vote@5``): arm j succeeds with
probability σ(0.2·j − 2·d + noise) for a length-derived difficulty d; output tokens and costs
grow with d, the tier and k. The scores say nothing about real models: the file only sizes
the work.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path


def questions(data: Path) -> list[str]:
    texts: list[str] = []
    for split in ("train", "test"):
        path = data / "llmrouter/data/dcrouter_preprocessed" / f"{split}.json"
        texts += [r["question"] for r in json.loads(path.read_text())]
    for split in ("test", "train"):
        path = data / "gsm8k-openai/grade_school_math/data" / f"{split}.jsonl"
        texts += [json.loads(line)["question"] for line in path.read_text().splitlines()]
    return list(dict.fromkeys(texts))


def few_shot_prefixes(data: Path, shots: int, count: int, seed: int) -> list[str]:
    """``count`` prefixes of ``shots`` worked examples each, from GSM8K's training set."""
    path = data / "gsm8k-openai/grade_school_math/data/train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rng = random.Random(seed + 1)
    out = []
    for _ in range(count):
        picked = rng.sample(rows, shots)
        out.append("".join(f"Question: {r['question']}\nAnswer: {r['answer']}\n\n" for r in picked))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--few-shot", type=int, default=0, help="worked examples before each question")
    ap.add_argument("--prefixes", type=int, default=4, help="distinct few-shot prefixes")
    a = ap.parse_args()
    texts = questions(a.data)[: a.n]
    if a.few_shot > 0:
        prefixes = few_shot_prefixes(a.data, a.few_shot, a.prefixes, a.seed)
        texts = [
            f"{prefixes[i % len(prefixes)]}Question: {t}\nAnswer:" for i, t in enumerate(texts)
        ]
    rng = random.Random(a.seed)
    arms = [f"t{j}/greedy" if j < 8 else f"t{j - 8}/vote@5" for j in range(11)]
    with a.out.open("w") as f:
        for i, text in enumerate(texts):
            d = (len(text) % 97) / 97.0
            for j, arm in enumerate(arms):
                p = 1 / (1 + math.exp(-(0.2 * j - 2 * d + rng.gauss(0, 0.5))))
                k = 5 if "vote" in arm else 1
                out = int(50 + 200 * d + rng.random() * 50) * k
                cost = (len(text) / 4 * k * (j + 1) * 0.1 + out * (j + 1) * 0.2) / 1e6
                rec = {
                    "prompt_id": f"s{i}",
                    "prompt": text,
                    "arm": arm,
                    "score": float(rng.random() < p),
                    "cost_usd": cost,
                    "output_tokens": out,
                }
                f.write(json.dumps(rec) + "\n")
    print(f"wrote {len(texts)} prompts x {len(arms)} arms to {a.out}")


if __name__ == "__main__":
    main()
