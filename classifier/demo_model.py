"""A small predictor for the demo backends that covers a strategy arm of every kind.

The shipped model knows only greedy arms (the public tables it is trained on have one
sample per prompt), and the service refuses to offer an arm its predictor cannot price.
This trains one on synthetic outcome records (arithmetic prompts the demo models answer,
scores drawn from each tier's nominal skill) with the real embedder, the same way
``ttc-router train`` does, so that strategy arms can be run end to end against the demo
backends (integration tests, ``benchmarks/overhead.py``). Its predictions mean nothing
beyond that.
"""

from __future__ import annotations

import random
from pathlib import Path

from classifier.outcomes_io import OutcomeRecord
from classifier.train import samples_per_call

STRATEGY_ARMS: tuple[str, ...] = (
    "local-7b/greedy",
    "local-7b/vote@5",
    "local-7b/short@4",
    "local-7b/think@48",
    "local-7b/beam@2",
    "local-7b/escalate@3",
    "mid-32b/greedy",
    "mid-32b/vote@5",
    "mid-32b/vote@8",
    "mid-32b/best@3",
    "premium/greedy",
)
_SKILL = {"local-7b": 0.55, "mid-32b": 0.75, "premium": 0.9}
_PRICE_PER_TOKEN = {"local-7b": 0.1e-6, "mid-32b": 0.6e-6, "premium": 10e-6}


def synthetic_records(n_prompts: int = 48, seed: int = 0) -> list[OutcomeRecord]:
    rng = random.Random(seed)
    records: list[OutcomeRecord] = []
    for i in range(n_prompts):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        prompt = f"What is {a}*{b}?" if i % 2 else f"Compute {a} + {b} and explain briefly."
        hardness = (a * b) / 10_000
        for arm in STRATEGY_ARMS:
            tier, strategy = arm.split("/")
            bonus = 0.1 if strategy != "greedy" else 0.0
            p = min(0.98, max(0.02, _SKILL[tier] + bonus - hardness))
            k = samples_per_call(arm)
            out_tokens = k * rng.randint(12, 40)
            records.append(
                OutcomeRecord(
                    prompt_id=f"s{i}",
                    prompt=prompt,
                    arm=arm,
                    score=float(rng.random() < p),
                    cost_usd=(20 * k + out_tokens) * _PRICE_PER_TOKEN[tier],
                    input_tokens=20 * k,
                    output_tokens=out_tokens,
                    task="arithmetic",
                )
            )
    return records


def train_strategy_model(out_dir: Path) -> Path:
    """Train and save the model into ``out_dir``; returns it."""
    from classifier.onnx_export import save_model
    from classifier.train import default_featurizer, train

    featurize, names = default_featurizer()
    model = train(
        synthetic_records(),
        seed=0,
        arms=list(STRATEGY_ARMS),
        featurize=featurize,
        feature_names=names,
        test_fraction=0.0,
    )
    save_model(model, out_dir, version_prefix="strategies")
    return out_dir
