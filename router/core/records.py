"""The outcome record of one request: the spec's fields (``spec/outcomes.md``) plus what the
service knows of the decision, the strategy run, the fallback and the failure."""

from __future__ import annotations

from typing import Any

from router.core.costs import MICROS_PER_USD
from router.core.requests import Decision
from router.core.types import StrategyResult


def outcome_record(
    *,
    tenant: str,
    prompt: str,
    decision: Decision,
    result: StrategyResult | None,
    cost_micros: int,
    latency_ms: float,
    error: str | None,
    ts: str,
    partial_output_tokens: int = 0,
    fallback_reason: str | None = None,
) -> dict[str, Any]:
    """The record as a JSON-ready dict.

    ``arm``/``tier``/``model`` are what ran last; tokens and ``samples`` are that run's
    (zero when it failed); ``partial_output_tokens`` are tokens of failed calls that were
    charged; ``cost_usd`` is everything charged. ``score`` is None until ``RecordOutcome``.
    """
    record: dict[str, Any] = {
        "prompt_id": decision.request_id,
        "prompt": prompt,
        "arm": decision.arm,
        "score": None,
        "cost_usd": cost_micros / MICROS_PER_USD,
        "task": "traffic",
        "input_tokens": result.input_tokens if result else 0,
        "output_tokens": result.output_tokens if result else 0,
        "latency_ms": round(latency_ms, 3),
        "propensity": decision.propensity,
        "explored": decision.explored,
        "request_id": decision.request_id,
        "tenant": tenant,
        "ts": ts,
        "model": decision.spec.tier.model,
        "decision_id": decision.decision_id,
        "tier": decision.spec.arm.tier,
        "strategy": decision.spec.strategy.name,
        "samples": result.samples if result else 0,
        "usage_estimated": result.usage_estimated if result else False,
        "detail": dict(result.detail) if result else {},
        "partial_output_tokens": partial_output_tokens,
        "fallback_from": decision.fallback_from,
        "fallback_reason": fallback_reason,
        "predicted_p_success": decision.chosen.p_success,
        "predicted_cost_usd": decision.chosen.expected_cost_micros / MICROS_PER_USD,
        "reserved_cost_usd": decision.chosen.reserved_cost_micros / MICROS_PER_USD,
        "model_version": decision.model_version,
        "error": error,
    }
    if result is not None and result.usage:
        record["usage_by_tier"] = [
            {
                "tier": u.tier,
                "input_tokens": u.input_tokens,
                "output_tokens": u.output_tokens,
                "samples": u.samples,
            }
            for u in result.usage
        ]
    return record
