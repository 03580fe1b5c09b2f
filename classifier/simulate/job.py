"""The job behind ``ttc-router simulate``: load a source, replay it, write outcome records."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from classifier.outcomes_io import prepare_output
from classifier.simulate.replay import (
    Progress,
    SimulatedOutcome,
    Simulation,
    SimulationConfig,
    simulate,
)
from classifier.simulate.rules import EarlyStop, parse_rule
from classifier.simulate.samples import PromptSamples, TokenCount, read_samples_jsonl
from router.core.types import Price
from router.errors import InvalidRequest

MOT_CASCADE = "mot-cascade"


@dataclass(frozen=True)
class Loaded:
    """Prompts with samples, the tiers in escalation order, each tier's model (if known)
    and the default prices of the source."""

    prompts: list[PromptSamples]
    tiers: list[str]
    models: dict[str, str]
    default_prices: dict[str, Price]


def parse_ints(spec: str, what: str) -> tuple[int, ...]:
    """``"3,5,9"`` → ``(3, 5, 9)`` (sorted, without repeats)."""
    try:
        values = {int(p) for p in spec.split(",") if p.strip()}
    except ValueError:
        raise InvalidRequest(f"{what} must be integers separated by commas, got {spec!r}") from None
    if not values:
        raise InvalidRequest(f"{what} is empty")
    return tuple(sorted(values))


def parse_floats(spec: str, what: str) -> tuple[float, ...]:
    """``"0.5,0.75"`` → ``(0.5, 0.75)`` (sorted, without repeats)."""
    try:
        values = {float(p) for p in spec.split(",") if p.strip()}
    except ValueError:
        raise InvalidRequest(f"{what} must be numbers separated by commas, got {spec!r}") from None
    if not values:
        raise InvalidRequest(f"{what} is empty")
    return tuple(sorted(values))


def parse_rules(spec: str) -> tuple[EarlyStop, ...]:
    """``"none,decided"`` → the rules, in the order given, without repeats."""
    rules: list[EarlyStop] = []
    for part in (p.strip() for p in spec.split(",")):
        if part and (rule := parse_rule(part)) not in rules:
            rules.append(rule)
    if not rules:
        raise InvalidRequest("--early-stop is empty")
    return tuple(rules)


def _is_mot_dir(path: Path) -> bool:
    return path.is_dir() and any(path.glob("*_result"))


def load_source(
    source: str,
    *,
    data_dir: Path,
    tiers: Mapping[str, str] | None = None,
    task: str | None = None,
    variant: str | None = None,
    limit: int | None = None,
    count_tokens: TokenCount | None = None,
) -> Loaded:
    """``mot-cascade`` (under ``data_dir``), a folder laid out like it, or a generic JSONL.

    ``tiers`` maps the tier names to use → the source's model folder (MoT-cascade) or the
    tier named in the file (JSONL); its order is the escalation order. ``limit`` keeps the
    first prompts that have every tier.
    """
    from classifier.importers import mot_cascade

    if limit is not None and limit < 1:
        raise InvalidRequest("--limit must be at least 1")
    mot_dir = data_dir / MOT_CASCADE if source == MOT_CASCADE else Path(source)
    if source == MOT_CASCADE or _is_mot_dir(mot_dir):
        chosen = dict(tiers) if tiers else dict(mot_cascade.DEFAULT_TIERS)
        prompts = mot_cascade.import_mot_cascade(
            mot_dir,
            tiers=chosen,
            task=task or mot_cascade.DEFAULT_TASK,
            variant=variant or mot_cascade.DEFAULT_VARIANT,
            count_tokens=count_tokens,
            limit=limit,
        )
        defaults = {
            t: mot_cascade.DEFAULT_PRICES[m]
            for t, m in chosen.items()
            if m in mot_cascade.DEFAULT_PRICES
        }
        return Loaded(prompts, list(chosen), chosen, defaults)
    path = Path(source)
    if not path.is_file():
        raise InvalidRequest(
            f"unknown source {source!r}: give {MOT_CASCADE}, a folder laid out like it, "
            "or a JSON Lines file of samples"
        )
    if task is not None or variant is not None:
        raise InvalidRequest("--task and --variant apply to MoT-cascade sources only")
    prompts, found = read_samples_jsonl(path, count_tokens=count_tokens)
    mapping = dict(tiers) if tiers else {t: t for t in found}
    unknown = [src for src in mapping.values() if src not in found]
    if unknown:
        raise InvalidRequest(f"{path}: no samples of tier(s) {unknown}; tiers found: {found}")
    renamed = [
        replace(p, tiers={new: p.tiers[old] for new, old in mapping.items()})
        for p in prompts
        if all(old in p.tiers for old in mapping.values())
    ]
    if limit is not None:
        renamed = renamed[:limit]
    return Loaded(renamed, list(mapping), {}, {})


def write_simulated(path: Path, outcomes: Sequence[SimulatedOutcome]) -> int:
    """Outcome records (JSON Lines) with the extra field ``samples``; returns the count."""
    if not outcomes:
        raise InvalidRequest("no records to write")
    prepare_output(path.parent, "--out")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for o in outcomes:
            handle.write(json.dumps(o.to_json(), ensure_ascii=False, sort_keys=True) + "\n")
    tmp.replace(path)
    return len(outcomes)


def simulate_job(
    source: str,
    out: Path,
    *,
    data_dir: Path,
    config: SimulationConfig,
    tiers: Mapping[str, str] | None = None,
    prices: Mapping[str, Price] | None = None,
    task: str | None = None,
    variant: str | None = None,
    limit: int | None = None,
    count_tokens: TokenCount | None = None,
    progress: Progress | None = None,
) -> tuple[Simulation, dict[str, Any]]:
    """Replay ``source`` and write the records to ``out``; returns the run and its report."""
    report: Callable[[str, float], None] = progress or (lambda what, fraction: None)
    report("reading samples", 0.0)
    loaded = load_source(
        source,
        data_dir=data_dir,
        tiers=tiers,
        task=task,
        variant=variant,
        limit=limit,
        count_tokens=count_tokens,
    )
    all_prices = {**loaded.default_prices, **(prices or {})}
    extra = sorted(set(prices or {}) - set(loaded.tiers))
    if extra:
        raise InvalidRequest(f"--prices names tier(s) {extra} that are not simulated")
    sim = simulate(
        loaded.prompts,
        tiers=loaded.tiers,
        prices=all_prices,
        config=config,
        models=loaded.models or None,
        progress=progress,
    )
    n = write_simulated(out, sim.outcomes)
    return sim, {
        "source": source,
        "out": str(out),
        "records": n,
        "prompts": sim.prompts,
        "dropped_prompts": sim.dropped_prompts,
        "tiers": [
            {
                "tier": t,
                "model": loaded.models.get(t),
                "samples_per_prompt": sim.samples_per_tier[t],
                "price": {
                    "input_per_mtok": all_prices[t].input_per_mtok,
                    "output_per_mtok": all_prices[t].output_per_mtok,
                },
            }
            for t in loaded.tiers
        ],
        "config": {
            "k": list(config.ks),
            "early_stop": list(config.rules),
            "confidence": config.confidence,
            "thresholds": list(config.thresholds),
            "permutations": config.permutations,
            "seed": config.seed,
        },
        "arms": [s.to_json() for s in sim.summary],
        "skipped_arms": sim.skipped_arms,
    }


__all__ = [
    "MOT_CASCADE",
    "Loaded",
    "load_source",
    "parse_floats",
    "parse_ints",
    "parse_rules",
    "simulate_job",
    "write_simulated",
]
