"""What a finished request costs, from the token counts the backends reported."""

from __future__ import annotations

from collections.abc import Callable

from router.core.catalog import ArmSpec
from router.core.types import Price, StrategyResult

MICROS_PER_USD = 1_000_000


def sum_cost(
    spec: ArmSpec, result: StrategyResult, price_of: Callable[[str], Price] | None = None
) -> int:
    """Actual cost of a finished strategy from the token counts the backends reported.

    A result with per-tier ``usage`` is charged at each tier's price.
    """
    if not result.usage:
        return spec.tier.price.to_price().micros(result.input_tokens, result.output_tokens)
    total = 0
    for u in result.usage:
        price = spec.tier.price.to_price() if u.tier == spec.arm.tier else None
        if price is None:
            if price_of is None:
                raise KeyError(f"no price known for tier {u.tier!r}")
            price = price_of(u.tier)
        total += price.micros(u.input_tokens, u.output_tokens)
    return total
