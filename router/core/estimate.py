"""Turn a prediction into priced, bounded candidates for the policy."""

from __future__ import annotations

import math
from collections.abc import Callable

from router.core.catalog import ArmSpec
from router.core.types import ArmPrediction, Price
from router.policy.choose import Candidate

# Tokens a chat template adds around the user's prompt, at most.
TEMPLATE_OVERHEAD_TOKENS = 64
MIN_OUTPUT_TOKENS = 64


def input_token_bounds(prompt: str, wordpiece_tokens: int) -> tuple[int, int]:
    """(expected, upper bound) of the input tokens a backend will count for ``prompt``.

    The upper bound uses the UTF-8 byte length: byte-level BPE tokenizers never produce more
    tokens than bytes, so a reservation made from it cannot be exceeded by the input side.
    """
    expected = wordpiece_tokens + TEMPLATE_OVERHEAD_TOKENS // 4
    upper = len(prompt.encode("utf-8")) + TEMPLATE_OVERHEAD_TOKENS
    return expected, max(expected, upper)


def candidate(
    spec: ArmSpec,
    pred: ArmPrediction,
    input_expected: int,
    input_upper: int,
    price_of: Callable[[str], Price] | None = None,
) -> Candidate:
    """Price one arm. ``max_tokens`` caps each sample, so the reservation is a true bound.

    ``price_of`` gives other tiers' prices, for strategies that span tiers; without it only
    the arm's own tier is known.
    """
    tier = spec.tier

    def own_price(name: str) -> Price:
        if name != spec.arm.tier:
            raise KeyError(f"no price known for tier {name!r}")
        return tier.price.to_price()

    k = spec.strategy.samples
    max_tokens = min(
        tier.max_output_tokens, max(MIN_OUTPUT_TOKENS, math.ceil(pred.output_tokens_hi))
    )
    expected_out = min(float(max_tokens), max(1.0, pred.output_tokens))
    price = tier.price
    expected_usd_micros = k * (
        input_expected * price.input_per_mtok + expected_out * price.output_per_mtok
    )
    reserved = spec.strategy.reservation_micros(
        spec.arm.tier, price_of or own_price, input_upper, max_tokens
    )
    return Candidate(
        arm=spec.name,
        p_success=min(1.0, max(0.0, pred.p_success)),
        expected_cost_micros=math.ceil(expected_usd_micros),
        reserved_cost_micros=reserved,
        expected_latency_ms=tier.latency.estimate_ms(expected_out),
        max_tokens=max_tokens,
        fits_context=input_expected + max_tokens <= tier.context_window,
    )
